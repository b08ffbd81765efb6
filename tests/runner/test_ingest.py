"""ingest end to end: real yt-dlp (generic extractor) against a loopback server, real ffmpeg."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.lifecycle import Retry
from runner.contract import EXIT_OK, EXIT_PERMANENT, EXIT_TRANSIENT
from tests.controller.test_lifecycle import job as lifecycle_job
from tests.controller.test_lifecycle import pod as lifecycle_pod
from tests.controller.test_lifecycle import run as decide_on
from tests.runner.conftest import Media, MediaServer, Route, Runner, RunResult, duration_of, probe


def controller_decision(run: RunResult) -> object:
    """What the controller's own rules (controller/lifecycle.py) decide about a pod whose
    runner ended as `run` did: its exit code and its termination message."""
    terminated = {"exitCode": run.code, "message": json.dumps(run.message)}
    return decide_on(lifecycle_job(type="Failed"), lifecycle_pod("Failed", terminated=terminated))


def test_normal_ingest_writes_audio_and_metadata(
    runner: Runner, http_server: MediaServer, media: Media, out_dir: Path
) -> None:
    url = http_server.serve("/tone.wav", Route(media.tone.read_bytes(), "audio/wav"))
    run = runner.run("ingest", {"url": url, "format": "mp3", "sample_rate": 22050},
                     job_id="ingest/one?")  # fmt: skip
    assert run.code == EXIT_OK, run.stderr
    result = run.result
    out = Path(result["output"])
    assert out.parent == out_dir and out.suffix == ".mp3"
    assert "/" not in out.name and "?" not in out.name  # the job id was made a safe file name
    streams = probe(out)["streams"]
    assert [s["codec_name"] for s in streams] == ["mp3"]
    assert streams[0]["sample_rate"] == "22050"
    assert result["duration"] == pytest.approx(6.0, abs=0.1)
    assert result["codec"] == "mp3" and result["size"] == out.stat().st_size
    assert result["source_url"] == url and result["title"] == "tone"
    meta = json.loads(Path(result["metadata"]).read_text())
    assert meta["duration"] == result["duration"] and meta["source_url"] == url
    stages = [stage for stage, _ in run.progress_lines]
    assert stages[-1] == "done" and "downloading" in stages
    assert runner.scratch_leftovers == []


def test_loudness_normalisation_brings_quiet_audio_up(
    runner: Runner, http_server: MediaServer, tmp_path: Path, out_dir: Path
) -> None:
    from tests.runner.conftest import ffmpeg, mean_volume

    quiet = tmp_path / "quiet.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=500:duration=5", "-af", "volume=-35dB", str(quiet))
    url = http_server.serve("/quiet.flac", Route(quiet.read_bytes(), "audio/flac"))
    run = runner.run("ingest", {"url": url, "format": "flac", "normalize_loudness": True})
    assert run.code == EXIT_OK, run.stderr
    out = Path(run.result["output"])
    assert run.result["loudness_normalized"] is True
    assert mean_volume(out) > mean_volume(quiet) + 15


def test_every_format_is_produced_and_checked(
    runner: Runner, http_server: MediaServer, media: Media
) -> None:
    url = http_server.serve("/noise.mp3", Route(media.noise.read_bytes(), "audio/mpeg"))
    codecs = {"mp3": "mp3", "wav": "pcm_s16le", "flac": "flac", "ogg": "vorbis",
              "opus": "opus", "m4a": "aac"}  # fmt: skip
    for fmt, codec in codecs.items():
        run = runner.run("ingest", {"url": url, "format": fmt, "output_name": f"n.{fmt}"})
        assert run.code == EXIT_OK, (fmt, run.stderr)
        stream = probe(Path(run.result["output"]))["streams"][0]
        assert stream["codec_name"] == codec
        assert duration_of(Path(run.result["output"])) == pytest.approx(4.0, abs=0.15)
        # The default 44.1 kHz, except Opus, which cannot run at it: the runner picks 48 kHz,
        # and the result reports the rate the file really has.
        rate = 48000 if fmt == "opus" else 44100
        assert (run.result["sample_rate"], int(stream["sample_rate"])) == (rate, rate), fmt


def test_slow_server_progress_advances(
    runner: Runner, http_server: MediaServer, media: Media
) -> None:
    body = media.tone.read_bytes()  # ~1 MiB, served in 20 pieces a quarter second apart
    url = http_server.serve(
        "/slow.wav", Route(body, "audio/wav", chunk=len(body) // 20 + 1, delay=0.25)
    )
    run = runner.run("ingest", {"url": url, "format": "wav"})
    assert run.code == EXIT_OK, run.stderr
    downloading = [p for stage, p in run.progress_lines if stage == "downloading"]
    assert len(set(downloading)) >= 3, run.stderr
    assert downloading == sorted(downloading)
    assert any("eta=" in line for line in run.stderr.splitlines() if "downloading" in line)


def test_forbidden_is_permanent(runner: Runner, http_server: MediaServer) -> None:
    url = http_server.serve("/secret.mp3", Route(status=403))
    run = runner.run("ingest", {"url": url})
    assert run.code == EXIT_PERMANENT
    assert run.message == {
        "ok": False,
        "kind": "permanent",
        "error": f"yt-dlp could not download {url}: HTTP 403 Forbidden (permanent)",
    }
    assert runner.scratch_leftovers == []


def test_not_found_is_permanent(runner: Runner, http_server: MediaServer) -> None:
    run = runner.run("ingest", {"url": http_server.base + "/nothing-here.mp3"})
    assert run.code == EXIT_PERMANENT
    assert "HTTP 404" in run.message["error"] and run.message["kind"] == "permanent"


def test_unavailable_is_transient_then_succeeds_on_the_controllers_retry(
    runner: Runner, http_server: MediaServer, media: Media
) -> None:
    route = Route(media.tone.read_bytes(), "audio/wav", status=503)
    url = http_server.serve("/busy.wav", route)

    first = runner.run("ingest", {"url": url}, attempt="1")
    assert first.code == EXIT_TRANSIENT, first.stderr
    assert first.message["kind"] == "transient"
    assert first.message["error"] == (
        f"yt-dlp could not download {url}: HTTP 503 Service Unavailable (transient)"
    )
    assert controller_decision(first) == Retry(first.message["error"])

    route.status = 200  # the source recovered before the retry
    second = runner.run("ingest", {"url": url}, attempt="2")
    assert second.code == EXIT_OK, second.stderr
    assert second.result["attempt"] == 2


def test_rate_limited_is_transient(runner: Runner, http_server: MediaServer) -> None:
    url = http_server.serve("/limited.mp3", Route(status=429))
    run = runner.run("ingest", {"url": url})
    assert (run.code, run.message["kind"]) == (EXIT_TRANSIENT, "transient")
    assert "HTTP 429" in run.message["error"]


def test_connection_refused_is_transient(runner: Runner, http_server: MediaServer) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = runner.run("ingest", {"url": f"http://127.0.0.1:{port}/x.mp3"})
    assert (run.code, run.message["kind"]) == (EXIT_TRANSIENT, "transient")
    assert "refused" in run.message["error"]


def test_connection_dropped_mid_file_is_transient(
    runner: Runner, http_server: MediaServer, media: Media
) -> None:
    body = media.tone.read_bytes()
    url = http_server.serve(
        "/cut.wav", Route(body[: len(body) // 2], "audio/wav", declared_length=len(body))
    )
    run = runner.run("ingest", {"url": url})
    assert (run.code, run.message["kind"]) == (EXIT_TRANSIENT, "transient"), run.stderr
    assert url in run.message["error"]


def test_truncated_file_is_permanent(
    runner: Runner, http_server: MediaServer, media: Media
) -> None:
    url = http_server.serve("/half.m4a", Route(media.truncated_m4a.read_bytes(), "audio/mp4"))
    run = runner.run("ingest", {"url": url})
    assert (run.code, run.message["kind"]) == (EXIT_PERMANENT, "permanent"), run.stderr
    assert run.message["error"].startswith(f"the download from {url} is corrupt")
    assert runner.scratch_leftovers == []


def test_file_that_is_not_audio_is_permanent(
    runner: Runner, http_server: MediaServer, media: Media
) -> None:
    url = http_server.serve("/picture.png", Route(media.picture.read_bytes(), "image/png"))
    run = runner.run("ingest", {"url": url})
    assert (run.code, run.message["kind"]) == (EXIT_PERMANENT, "permanent"), run.stderr
    assert run.message["error"].startswith(f"the download from {url} is not audio")


def test_silence_is_still_audio(runner: Runner, http_server: MediaServer, media: Media) -> None:
    url = http_server.serve("/quiet.flac", Route(media.silence.read_bytes(), "audio/flac"))
    run = runner.run("ingest", {"url": url, "format": "ogg"})
    assert run.code == EXIT_OK, run.stderr
    assert run.result["duration"] == pytest.approx(3.0, abs=0.1)


def test_huge_declared_size_is_refused_before_downloading(
    runner: Runner, http_server: MediaServer
) -> None:
    url = http_server.serve(
        "/huge.wav", Route(b"RIFF" + b"\0" * 4096, "audio/wav", declared_length=10**13)
    )
    run = runner.run("ingest", {"url": url})
    assert (run.code, run.message["kind"]) == (EXIT_PERMANENT, "permanent"), run.stderr
    assert run.message["error"] == (
        f"yt-dlp refused {url}: the source declares 10,000,000,000,000 bytes, more than the "
        f"limit of 2,147,483,648 bytes (AUDIOJOB_MAX_DOWNLOAD_BYTES) (permanent)"
    )


def test_invalid_payload_is_permanent_without_any_download(
    runner: Runner, http_server: MediaServer
) -> None:
    run = runner.run("ingest", {"url": "ftp://example.invalid/x", "format": "aiff"})
    assert (run.code, run.message["kind"]) == (EXIT_PERMANENT, "permanent")
    assert run.message["error"].startswith("invalid ingest payload: ")
    assert "url" in run.message["error"] and "format" in run.message["error"]
    assert http_server.routes == {}


def test_unknown_type_and_broken_json_are_permanent(runner: Runner) -> None:
    run = runner.run("transmogrify", {})
    assert run.code == EXIT_PERMANENT
    assert run.message["error"].startswith("unknown job type 'transmogrify'")
    run = runner.run("ingest", "{not json")
    assert run.code == EXIT_PERMANENT
    assert run.message["error"].startswith("payload is not valid JSON")
