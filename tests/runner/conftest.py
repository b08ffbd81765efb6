"""Runner fixtures: media made by ffmpeg, a loopback HTTP server with misbehaving routes, and
a helper that runs `python -m runner` as the pod would, reading back its termination message."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_DEADLINE = 180  # seconds; a runner that hangs fails the test instead of the suite
LOOPBACK_ALLOWED = "127.0.0.1/32"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    return json.loads(out)


def duration_of(path: Path) -> float:
    return float(probe(path)["format"]["duration"])


def mean_volume(path: Path, start: float = 0.0, length: float | None = None) -> float:
    """Mean volume in dBFS of a segment, measured by ffmpeg's volumedetect."""
    window = ["-ss", str(start), *(["-t", str(length)] if length else [])]
    err = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", *window, "-i", str(path), "-af", "volumedetect",
         "-f", "null", "-"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stderr  # fmt: skip
    line = next(x for x in err.splitlines() if "mean_volume:" in x)
    return float(line.split("mean_volume:")[1].split()[0])


@dataclass(frozen=True)
class Media:
    root: Path

    @property
    def tone(self) -> Path:  # 6 s, 440 Hz, stereo wav
        return self.root / "tone.wav"

    @property
    def noise(self) -> Path:  # 4 s pink noise mp3
        return self.root / "noise.mp3"

    @property
    def silence(self) -> Path:  # 3 s of silence, flac
        return self.root / "silence.flac"

    @property
    def truncated_m4a(self) -> Path:  # first half of an AAC m4a whose index sits at the end
        return self.root / "truncated.m4a"

    @property
    def picture(self) -> Path:  # a PNG: media, but not audio
        return self.root / "picture.png"


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    root = tmp_path_factory.mktemp("media")
    m = Media(root)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=6",
           "-af", "volume=-6dB", "-ac", "2", str(m.tone))  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=color=pink:duration=4:amplitude=0.3",
           "-c:a", "libmp3lame", "-b:a", "128k", str(m.noise))  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "3", str(m.silence))
    whole = root / "whole.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:duration=8", "-c:a", "aac", str(whole))
    data = whole.read_bytes()
    m.truncated_m4a.write_bytes(data[: len(data) // 2])
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=64x64", "-frames:v", "1", str(m.picture))
    return m


# --- a loopback HTTP server whose routes misbehave on purpose ---------------------------------


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    declared_length: int | None = None  # a Content-Length that may lie
    chunk: int = 0  # > 0: send in chunks of this size...
    delay: float = 0.0  # ...with this pause between them
    location: str = ""  # with a 3xx status: where it redirects
    reset: bool = False  # answer with a TCP reset (ECONNRESET), like a flaky CDN
    hits: int = 0


@dataclass
class MediaServer:
    base: str
    routes: dict[str, Route] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def serve(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def _respond(self, *, with_body: bool) -> None:
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        route.hits += 1
        if route.location:
            self.send_response(route.status)
            self.send_header("Location", route.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route.reset:
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if route.status != 200:
            self.send_error(route.status)
            return
        self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        length = route.declared_length if route.declared_length is not None else len(route.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if not with_body:
            return
        try:
            if route.chunk <= 0:
                self.wfile.write(route.body)
            else:
                for i in range(0, len(route.body), route.chunk):
                    self.wfile.write(route.body[i : i + route.chunk])
                    self.wfile.flush()
                    time.sleep(route.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client (yt-dlp's probe request) read enough and hung up
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]


@pytest.fixture
def http_server() -> Iterator[MediaServer]:
    with media_server("127.0.0.1") as served:
        yield served


@contextlib.contextmanager
def media_server(host: str) -> Iterator[MediaServer]:
    """The misbehaving server on `host` (the real node's pods reach its bridge address)."""
    server = _Server((host, 0), _Handler)
    server.routes = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield MediaServer(base=f"http://{host!s}:{port}", routes=server.routes)
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


# --- running the runner as a pod would ----------------------------------------------------------


@dataclass
class RunResult:
    code: int
    message: dict[str, Any]
    stderr: str

    @property
    def progress_lines(self) -> list[tuple[str, int]]:
        return parse_progress(self.stderr)

    @property
    def result(self) -> dict[str, Any]:
        assert self.message.get("ok") is True, self.message
        return dict(self.message["result"])


def parse_progress(stderr: str) -> list[tuple[str, int]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("progress stage="):
            fields = dict(part.split("=", 1) for part in line.split()[1:3])
            found.append((fields["stage"], int(fields["percent"])))
    return found


@dataclass
class Runner:
    tmp: Path
    output: str

    def env(self, job_type: str, payload: dict[str, Any] | str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "KUBECONFIG")}
        scratch = self.tmp / "scratch"
        scratch.mkdir(exist_ok=True)
        env.update(
            AUDIOJOB_ID=extra.pop("job_id", "job-1"),
            AUDIOJOB_TYPE=job_type,
            AUDIOJOB_ATTEMPT=extra.pop("attempt", "1"),
            AUDIOJOB_TRACE_ID="trace-test",
            AUDIOJOB_PAYLOAD=payload if isinstance(payload, str) else json.dumps(payload),
            AUDIOJOB_OUTPUT=self.output,
            AUDIOJOB_TERMINATION_LOG=str(self.tmp / "termination-log"),
            TMPDIR=str(scratch),
            PYTHONPATH=str(REPO),
            # The test servers listen on loopback, which job pods may not fetch from by
            # default; the tests allow it the way an operator would. `test_guard.py` runs
            # with the default instead (pass AUDIOJOB_ALLOWED_NETWORKS="").
            AUDIOJOB_ALLOWED_NETWORKS=LOOPBACK_ALLOWED,
        )
        env.update(extra)
        return env

    def start(self, job_type: str, payload: dict[str, Any] | str, **extra: str) -> Popen:
        (self.tmp / "termination-log").unlink(missing_ok=True)
        return subprocess.Popen(
            [sys.executable, "-m", "runner"],
            env=self.env(job_type, payload, **extra),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, proc: Popen, *, stderr_read_elsewhere: bool = False) -> RunResult:
        """Wait for the runner; with `stderr_read_elsewhere`, leave its stderr to that reader."""
        err = ""
        try:
            if stderr_read_elsewhere:
                proc.wait(timeout=RUN_DEADLINE)
            else:
                _, err = proc.communicate(timeout=RUN_DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        text = (self.tmp / "termination-log").read_text()
        return RunResult(proc.returncode, json.loads(text), err or "")

    def run(self, job_type: str, payload: dict[str, Any] | str, **extra: str) -> RunResult:
        return self.finish(self.start(job_type, payload, **extra))

    @property
    def scratch_leftovers(self) -> list[Path]:
        return sorted((self.tmp / "scratch").glob("*"))


Popen = subprocess.Popen[str]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def runner(tmp_path: Path, out_dir: Path) -> Runner:
    return Runner(tmp=tmp_path, output=str(out_dir))
