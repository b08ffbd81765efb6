"""The address guard with real connections: loopback servers it must refuse, redirects out of
an allowed server, names that resolve to loopback, odd spellings, and ffmpeg kept to local
files. Every refused target listens on this machine, so a broken guard still stays local."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner.rules import ENV_ALLOWED_NETWORKS
from tests.runner.conftest import (
    REPO,
    RUN_DEADLINE,
    Media,
    MediaServer,
    Route,
    Runner,
    media_server,
)

HINT = (
    "job pods fetch only from public addresses (if this source is trusted, add {ip} or its "
    "network to AUDIOJOB_ALLOWED_NETWORKS, chart value runner.allowedNetworks)"
)


def refused(url: str, where: str, ip: str = "127.0.0.1") -> str:
    return f"refused to fetch {url}: {where}; " + HINT.format(ip=ip)


def download_child(url: str, dest: Path, allowed: str = "") -> dict[str, Any]:
    """The yt-dlp child as the runner starts it, with the given allowlist; its last event."""
    request = {"url": url, "dest": str(dest), "max_bytes": 10**8, "socket_timeout": 5}
    proc = subprocess.run(
        [sys.executable, "-m", "runner.download", json.dumps(request)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", ENV_ALLOWED_NETWORKS: allowed},
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE,
        check=False,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture
def tone_server(http_server: MediaServer, media: Media) -> MediaServer:
    http_server.serve("/tone.wav", Route(media.tone.read_bytes(), "audio/wav"))
    return http_server


def test_default_guard_refuses_loopback_by_address_and_by_name(
    tone_server: MediaServer, tmp_path: Path
) -> None:
    port = tone_server.port
    for host, where in [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("localhost", "localhost is 127.0.0.1, a loopback address"),
        ("2130706433", "2130706433 is 127.0.0.1, a loopback address"),
        ("0x7f.1", "0x7f.1 is 127.0.0.1, a loopback address"),
        ("0177.0.0.1", "0177.0.0.1 is 127.0.0.1, a loopback address"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1 is 127.0.0.1, a loopback address"),
    ]:
        url = f"http://{host}:{port}/tone.wav"
        event = download_child(url, tmp_path)
        assert event == {"event": "error", "message": refused(url, where), "kind": "permanent"}
    assert tone_server.routes["/tone.wav"].hits == 0


def test_unspecified_address_is_refused(tmp_path: Path) -> None:
    # 0.0.0.0 reaches this machine's listeners on Linux; it must never be connected to.
    with media_server("0.0.0.0") as server:
        url = server.serve("/x.wav", Route(b"RIFF"))
        event = download_child(url, tmp_path)
        assert event["message"] == refused(url, "0.0.0.0 is an unspecified address", "0.0.0.0")
        assert server.routes["/x.wav"].hits == 0


def test_runner_in_its_default_state_refuses_loopback_with_exit_65(
    runner: Runner, tone_server: MediaServer
) -> None:
    url = tone_server.base.replace("127.0.0.1", "localhost") + "/tone.wav"
    run = runner.run("ingest", {"url": url}, **{ENV_ALLOWED_NETWORKS: ""})
    assert run.code == 65
    assert run.message == {
        "ok": False,
        "error": refused(url, "localhost is 127.0.0.1, a loopback address"),
        "kind": "permanent",
    }
    assert tone_server.routes["/tone.wav"].hits == 0


@pytest.mark.parametrize(
    ("target_host", "where"),
    [
        ("127.0.0.2", "it led to 127.0.0.2, a loopback address"),
        ("localhost", "it led to localhost, which is 127.0.0.1, a loopback address"),
    ],
)
def test_allowed_server_redirecting_to_a_refused_address_is_caught(
    runner: Runner, tone_server: MediaServer, target_host: str, where: str
) -> None:
    """Only 127.0.0.1:<this port> is allowed; the redirect goes to another loopback listener."""
    with media_server("127.0.0.2" if target_host == "127.0.0.2" else "127.0.0.1") as target:
        target.serve("/inside.wav", Route(b"secret"))
        location = f"http://{target_host}:{target.port}/inside.wav"
        url = tone_server.serve("/go", Route(status=302, location=location))
        run = runner.run(
            "ingest", {"url": url}, **{ENV_ALLOWED_NETWORKS: f"127.0.0.1:{tone_server.port}"}
        )
        ip = "127.0.0.2" if target_host == "127.0.0.2" else "127.0.0.1"
        assert run.code == 65
        assert run.message["error"] == refused(url, where, ip)
        assert tone_server.routes["/go"].hits >= 1
        assert target.routes["/inside.wav"].hits == 0


def test_allowed_host_and_port_completes_through_the_real_pipeline(
    runner: Runner, tone_server: MediaServer, out_dir: Path
) -> None:
    url = f"http://localhost:{tone_server.port}/tone.wav"
    run = runner.run(
        "ingest",
        {"url": url, "format": "mp3"},
        **{ENV_ALLOWED_NETWORKS: f"localhost:{tone_server.port}"},
    )
    assert run.code == 0, run.message
    assert run.result["codec"] == "mp3" and run.result["duration"] > 5
    assert (out_dir / "job-1.mp3").is_file()


def test_a_playlist_posing_as_audio_is_not_followed_by_ffmpeg(
    runner: Runner, http_server: MediaServer, out_dir: Path
) -> None:
    """An HLS playlist named like audio: ffmpeg would fetch its segments itself."""
    segment = http_server.serve("/seg.ts", Route(b"\x47" * 188 * 10, "video/mp2t"))
    (out_dir / "evil.mp3").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{segment}\n#EXT-X-ENDLIST\n"
    )
    run = runner.run("preview", {"input": "evil.mp3"})
    assert run.code == 65, run.message
    assert run.message["kind"] == "permanent"
    assert "input 'evil.mp3'" in run.message["error"]
    assert http_server.routes["/seg.ts"].hits == 0


def test_the_download_child_may_start_no_program(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys\n"
        "from runner.guard import Guard\n"
        "from runner.rules import NetworkRules\n"
        "Guard('http://x.test/', NetworkRules()).install()\n"
        "try:\n"
        "    subprocess.run(['ffmpeg', '-version'], check=True)\n"
        "except PermissionError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "may not start programs (subprocess.Popen)" in out


def hls_stream(tmp_path: Path, media: Media, segment_base: str) -> tuple[bytes, dict[str, bytes]]:
    """A real HLS stream of the tone (ffmpeg's segmenter): the playlist, with segment URLs
    under `segment_base`, and the segments by name."""
    out = tmp_path / "hls"
    out.mkdir()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(media.tone), "-c:a", "aac", "-f", "hls",
         "-hls_time", "2", "-hls_list_size", "0", "-hls_base_url", segment_base + "/",
         str(out / "list.m3u8")],
        check=True, timeout=120,
    )  # fmt: skip
    segments = {p.name: p.read_bytes() for p in out.glob("*.ts")}
    assert len(segments) >= 2
    return (out / "list.m3u8").read_bytes(), segments


HLS = "application/vnd.apple.mpegurl"


def test_hls_fragments_come_through_the_native_downloader_without_ffmpeg(
    runner: Runner, http_server: MediaServer, media: Media, tmp_path: Path
) -> None:
    playlist, segments = hls_stream(tmp_path, media, http_server.base + "/seg")
    for name, body in segments.items():
        http_server.serve(f"/seg/{name}", Route(body, "video/mp2t"))
    url = http_server.serve("/list.m3u8", Route(playlist, HLS))
    run = runner.run("ingest", {"url": url, "format": "mp3"})
    assert run.code == 0, run.message
    assert 5 < run.result["duration"] < 7
    assert all(http_server.routes[f"/seg/{n}"].hits == 1 for n in segments)


def test_hls_fragments_on_a_refused_address_are_caught(
    runner: Runner, http_server: MediaServer, media: Media, tmp_path: Path
) -> None:
    with media_server("127.0.0.2") as inside:
        playlist, segments = hls_stream(tmp_path, media, inside.base + "/seg")
        for name, body in segments.items():
            inside.serve(f"/seg/{name}", Route(body, "video/mp2t"))
        url = http_server.serve("/list.m3u8", Route(playlist, HLS))
        run = runner.run("ingest", {"url": url})
        assert run.code == 65, run.message
        assert run.message["error"] == refused(
            url, "it led to 127.0.0.2, a loopback address", "127.0.0.2"
        )
        assert sum(r.hits for r in inside.routes.values()) == 0


def test_a_playlist_of_local_files_is_refused_not_rendered(
    runner: Runner, media: Media, out_dir: Path, tmp_path: Path
) -> None:
    """A playlist naming files on the output volume (other jobs' audio) is not followed."""
    playlist, segments = hls_stream(tmp_path, media, str(out_dir / "private"))
    (out_dir / "private").mkdir()
    for name, body in segments.items():
        (out_dir / "private" / name).write_bytes(body)
    (out_dir / "evil.mp3").write_bytes(playlist)
    run = runner.run("save", {"input": "evil.mp3"})
    assert run.code == 65
    assert run.message["error"] == (
        "input 'evil.mp3' is a hls playlist, not an audio file; it is not followed (permanent)"
    )


HANDLER_PROBE = """
import json, sys
sys.modules["curl_cffi"] = None
from runner.guard import AddressRefused, Guard
from runner.rules import NetworkRules
from runner.errors import exception_chain
Guard(sys.argv[1], NetworkRules()).install()
import yt_dlp  # noqa: F401 - registers the request handlers
from yt_dlp.networking import Request
from yt_dlp.networking.common import _REQUEST_HANDLERS

class Quiet:
    def debug(self, msg): pass
    warning = error = stdout = stderr = info = debug

verdicts = {}
for key, handler in _REQUEST_HANDLERS.items():
    for url in sys.argv[1:]:
        if url.split(":")[0] not in handler._SUPPORTED_URL_SCHEMES:
            continue
        try:
            handler(logger=Quiet(), timeout=5).send(Request(url)).read()
            verdicts[f"{key} {url}"] = "fetched"
        except Exception as e:
            refused = any(isinstance(x, AddressRefused) for x in exception_chain(e))
            verdicts[f"{key} {url}"] = "refused" if refused else repr(e)
print(json.dumps(verdicts))
"""


def test_every_request_handler_of_yt_dlp_is_guarded(tone_server: MediaServer) -> None:
    """Each handler yt-dlp has here (urllib, requests; curl_cffi is never loaded), each scheme
    it speaks that reaches the network, through the handler's own connection code."""
    urls = [
        tone_server.base + "/tone.wav",
        f"http://localhost:{tone_server.port}/tone.wav",
        f"ftp://127.0.0.1:{tone_server.port}/tone.wav",
    ]
    out = subprocess.run(
        [sys.executable, "-c", HANDLER_PROBE, *urls],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_DEADLINE, check=True,
    ).stdout  # fmt: skip
    verdicts = json.loads(out)
    assert {key.split()[0] for key in verdicts} == {"Urllib", "Requests"}
    assert len(verdicts) == 5  # requests speaks no ftp
    assert set(verdicts.values()) == {"refused"}, verdicts
    assert tone_server.routes["/tone.wav"].hits == 0
