"""The mission on real pods: the controller runs ingest, preview and save rows as Jobs whose
runner (the image from `make image`) fetches audio from a server on this machine, transcodes it
with the real ffmpeg and writes to the output volume; failures reach the row as sentences."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from controller.store import JobRow
from runner.payloads import JOB_TYPES
from tests.e2e.conftest import Controller, Rows
from tests.helpers import wait_for
from tests.realnode.conftest import RUNNER_UID, OutputVolume
from tests.runner.conftest import MediaServer, Route, duration_of, probe

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]
OUTPUT = "/data/output"  # the runner's output directory in the pod (settings default)


def on_host(volume: OutputVolume, pod_path: str) -> Path:
    """Where a path the runner reported inside its pod lies on this machine."""
    return volume.host_dir / Path(pod_path).relative_to(OUTPUT)


def result_of(row: JobRow) -> dict[str, Any]:
    assert row.status == "complete", row
    return dict(json.loads(row.result or "{}"))


def watch_until_done(rows: Rows, job_id: str, *, timeout: float) -> tuple[JobRow, set[Any]]:
    """Poll the row like the app's progress bar until it ends; returns the last row and every
    (stage, progress) pair seen while it was processing."""
    seen: set[tuple[str | None, int]] = set()

    def done() -> JobRow | None:
        row = rows.get(job_id)
        if row.status == "processing" and row.stage:
            seen.add((row.stage, row.progress))
        return row if row.status in ("complete", "failed") else None

    return wait_for(done, timeout=timeout, interval=0.2, message=f"{job_id} to end"), seen


def tone(path: Path, *, seconds: int, frequency: int = 440) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency={frequency}:duration={seconds}", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def test_ingest_fetches_transcodes_and_reports_progress(
    real_controller: Controller,
    rows: Rows,
    node_media_server: MediaServer,
    output_volume: OutputVolume,
    long_audio: bytes,
) -> None:
    # Sent in slices so the download itself takes seconds and its progress shows on the row.
    url = node_media_server.serve(
        "/episode.mp3",
        Route(body=long_audio, content_type="audio/mpeg", chunk=len(long_audio) // 20, delay=0.3),
    )
    rows.insert("episode", "ingest", {"url": url, "format": "ogg", "normalize_loudness": True})
    t0 = time.monotonic()
    real_controller.start()
    row, seen = watch_until_done(rows, "episode", timeout=300)
    print(f"ingest of 10 min of audio on a real pod: {time.monotonic() - t0:.0f}s; seen {seen}")
    result = result_of(row)
    assert {stage for stage, _ in seen} >= {"downloading", "transcoding"}, seen
    assert len({progress for _, progress in seen}) >= 3, seen
    assert (result["codec"], result["format"]) == ("vorbis", "ogg")
    assert result["duration"] == pytest.approx(600, abs=1)
    assert result["loudness_normalized"] is True
    written = on_host(output_volume, result["output"])
    assert written.stat().st_uid == RUNNER_UID
    assert probe(written)["streams"][0]["codec_name"] == "vorbis"
    assert duration_of(written) == pytest.approx(600, abs=1)


def test_preview_and_save_apply_the_edit_list(
    real_controller: Controller, rows: Rows, output_volume: OutputVolume
) -> None:
    source = output_volume.host_dir / "uploads" / "take-1.wav"
    source.parent.mkdir()
    tone(source, seconds=20)
    edits = [
        {"op": "trim", "start": 2, "end": 14},
        {"op": "fade_in", "duration": 1},
        {"op": "fade_out", "duration": 2},
    ]
    rows.insert("take-1-preview", "preview", {"input": "uploads/take-1.wav", "edits": edits,
                                              "max_duration": 5})  # fmt: skip
    rows.insert("take-1-final", "save", {"input": "uploads/take-1.wav", "edits": edits,
                                         "format": "flac", "sample_rate": 48000})  # fmt: skip
    real_controller.start()
    preview = result_of(rows.wait_status("take-1-preview", "complete", "failed", timeout=180))
    final = result_of(rows.wait_status("take-1-final", "complete", "failed", timeout=180))
    # The preview is the first max_duration seconds of the edited audio, as a small mp3.
    assert (preview["format"], preview["codec"], preview["preview"]) == ("mp3", "mp3", True)
    assert duration_of(on_host(output_volume, preview["output"])) == pytest.approx(5, abs=0.1)
    # The final render is the whole 12 s window, in the format and rate asked for.
    assert (final["format"], final["codec"], final["sample_rate"]) == ("flac", "flac", 48000)
    saved = on_host(output_volume, final["output"])
    assert duration_of(saved) == pytest.approx(12, abs=0.05)
    assert probe(saved)["streams"][0]["sample_rate"] == "48000"


def test_out_of_memory_names_the_limit(
    real_controller: Controller, rows: Rows, node_media_server: MediaServer, long_audio: bytes
) -> None:
    # Less than the runner's Python needs to start: the kernel kills it in the container.
    tight = {"cpu_request": "50m", "memory_request": "24Mi", "memory_limit": "24Mi"}
    resources = {t: {"cpu_request": "50m", "memory_request": "64Mi"} for t in JOB_TYPES}
    url = node_media_server.serve("/big.mp3", Route(body=long_audio, content_type="audio/mpeg"))
    rows.insert("big-one", "ingest", {"url": url})
    real_controller.start(AUDIOJOB_RUNNER__RESOURCES=json.dumps(resources | {"ingest": tight}))
    row = rows.wait_status("big-one", "failed", timeout=180)
    assert row.error_kind == "permanent", row
    assert row.error is not None and "24Mi memory limit (OOMKilled)" in row.error, row.error
    assert row.retry_count == 0


def test_a_missing_source_fails_at_once(
    real_controller: Controller, rows: Rows, node_media_server: MediaServer
) -> None:
    url = node_media_server.serve("/gone.mp3", Route(status=404))
    rows.insert("gone", "ingest", {"url": url})
    real_controller.start()
    row = rows.wait_status("gone", "failed", timeout=180)
    assert (row.error_kind, row.attempt, row.retry_count) == ("permanent", 1, 0), row
    assert row.error is not None and "404" in row.error, row.error


def test_a_reset_connection_is_retried_once(
    real_controller: Controller, rows: Rows, node_media_server: MediaServer
) -> None:
    route = Route(reset=True)
    url = node_media_server.serve("/flaky.mp3", route)
    rows.insert("flaky", "ingest", {"url": url})
    real_controller.start()
    row = rows.wait_status("flaky", "failed", timeout=240)
    assert (row.attempt, row.retry_count) == (2, 1), row
    assert row.error is not None and "reset" in row.error, row.error
    assert route.hits >= 2  # each attempt's pod reached the server


def test_a_runner_pod_refuses_a_redirect_to_link_local(
    real_controller: Controller, rows: Rows, node_media_server: MediaServer
) -> None:
    # The source itself is allowed (the bridge address is on the allowlist), so the claim hands
    # the row to a pod; the redirect to the metadata address can only be caught in the pod, by
    # the runner's guard. The pod network has no route off this machine either way.
    metadata = "http://169.254.169.254/latest/meta-data/"
    url = node_media_server.serve("/moved.mp3", Route(status=302, location=metadata))
    rows.insert("sneaky", "ingest", {"url": url})
    real_controller.start()
    row = rows.wait_status("sneaky", "failed", timeout=180)
    assert (row.error_kind, row.attempt, row.retry_count) == ("permanent", 1, 0), row
    assert row.k8s_job, "the row was refused in a pod, not at claim"
    assert row.error is not None, row
    assert row.error.startswith(
        f"refused to fetch {url}: it led to 169.254.169.254, a link-local"
    ), row.error
    assert "runner.allowedNetworks" in row.error, row.error
