"""The demo's two scenes: real jobs on the real node, or kwok's simulated pods where the real
node cannot start. A scene is the rows the "app" inserts, the settings the controller gets, and
what the app does while they run (cancel one, add renders once an ingest is done)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from controller.store import JobRow
from devcluster.controlplane import LocalCluster, binary
from devcluster.node import RealNode
from devcluster.realjobs import create_output_volume, node_processes, pod_pids, runner_env

NAMESPACE = "audiojob-jobs"
CHART = Path(__file__).resolve().parent.parent / "charts" / "audiojob-operator"
RUNNER_SA = "audiojob-runner"  # the chart's runner service account
Sample = tuple[str, str, object]  # job_id, type, payload


@dataclass
class Scene:
    real: bool
    env: dict[str, str]
    samples: list[Sample]
    cancel_id: str
    cancel_when: Callable[[JobRow], bool]
    # job_id -> rows the app inserts once that job completes, built from its result
    follow_ups: dict[str, Callable[[dict[str, Any]], list[Sample]]] = field(default_factory=dict)
    output_dir: Path | None = None


# --- real pods ----------------------------------------------------------------------------


class _MediaHandler(BaseHTTPRequestHandler):
    server: _MediaServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # In twenty slices, like a slow origin: the download's progress shows on the row.
        step = max(1, len(body) // 20)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                time.sleep(0.15)


class _MediaServer(ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, bytes]


@contextlib.contextmanager
def media_server(host: str, files: dict[str, bytes]) -> Iterator[str]:
    """Serves `files` (path -> bytes) on `host`, the bridge address only pods and this machine
    reach; yields the base URL."""
    server = _MediaServer((host, 0), _MediaHandler)
    server.files = files
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def sine_mp3(path: Path, *, seconds: int, frequency: int) -> bytes:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency={frequency}:sample_rate=22050:duration={seconds}",
         "-ac", "1", "-b:a", "48k", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path.read_bytes()


def install_runner_identity(cluster: LocalCluster) -> None:
    """`helm install` of the chart for its runner service account, RBAC and admission policy;
    the controller itself runs on this machine (its log is the demo's to show)."""
    subprocess.run(
        [
            str(binary("helm")), "install", "audiojob", str(CHART),
            f"--namespace={NAMESPACE}", f"--kubeconfig={cluster.kubeconfig}",
            "--set=controller.replicas=0", "--set=queueMetrics.enabled=false",
            # No controller pod: the chart's database is never opened, only asked for.
            "--set=database.embeddedFile=true",
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


@contextlib.contextmanager
def real_scene(cluster: LocalCluster, node: RealNode, work: Path) -> Iterator[Scene]:
    install_runner_identity(cluster)
    volume = create_output_volume(cluster, namespace=NAMESPACE, host_dir=work / "output")
    files = {
        "/episode-1.mp3": sine_mp3(work / "episode-1.mp3", seconds=180, frequency=440),
        "/long-episode.mp3": sine_mp3(work / "long-episode.mp3", seconds=900, frequency=220),
    }
    with media_server(node.network.gateway, files) as base:
        edits = [{"op": "trim", "start": 10, "end": 70}, {"op": "fade_in", "duration": 2}]
        yield Scene(
            real=True,
            env=runner_env(node=node, claim=volume.claim, service_account=RUNNER_SA),
            samples=[
                (
                    "episode-1",
                    "ingest",
                    {"url": f"{base}/episode-1.mp3", "normalize_loudness": True},
                ),
                ("missing-episode", "ingest", {"url": f"{base}/no-such-episode.mp3"}),
                ("broken-upload", "ingest", f'{{"url": {base}/oops}}'),
                (
                    "changed-my-mind",
                    "ingest",
                    {"url": f"{base}/long-episode.mp3", "normalize_loudness": True},
                ),
            ],
            cancel_id="changed-my-mind",
            cancel_when=lambda row: row.stage == "transcoding",
            follow_ups={
                "episode-1": lambda result: [
                    ("episode-1-preview", "preview", {"input": result["key"], "edits": edits}),
                    (
                        "episode-1-final",
                        "save",
                        {"input": result["key"], "edits": edits, "format": "flac"},
                    ),
                ],
            },
            output_dir=volume.host_dir,
        )
    cluster.kubectl("delete", "pv", volume.pv, "--wait=false", check=False)


def ffmpeg_gone_after(cluster: LocalCluster, k8s_job: str, t0: float) -> float | None:
    """Seconds from `t0` until no ffmpeg runs in the pod of `k8s_job` (None: none was found)."""
    uid = cluster.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", f"job-name={k8s_job}",
        "-o", "jsonpath={.items[0].metadata.uid}", check=False,
    ).stdout.strip()  # fmt: skip
    if not uid:
        return None
    deadline = time.monotonic() + 60
    while node_processes("ffmpeg", pids=pod_pids(uid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return time.monotonic() - t0


# --- simulated pods (kwok) ----------------------------------------------------------------


def simulated_scene() -> Scene:
    message = json.dumps({"ok": True, "result": {"simulated": True}})
    return Scene(
        real=False,
        env={
            "AUDIOJOB_RUNNER__SERVICE_ACCOUNT": "default",
            "AUDIOJOB_RUNNER__POD_ANNOTATIONS": json.dumps(
                {
                    "audiojob.dev/sim-duration": "6s",
                    "audiojob.dev/sim-message": message,
                    "audiojob.dev/sim-term-delay": "1s",
                }
            ),
        },
        samples=[
            ("podcast-ep-1", "ingest", {"url": "https://example.com/ep1.mp3", "format": "mp3"}),
            (
                "podcast-ep-1-preview",
                "preview",
                {"input": "podcast-ep-1.mp3", "edits": [{"op": "trim", "start": 0, "end": 30}]},
            ),
            ("broken-upload", "ingest", '{"url": https://example.com/oops}'),
            ("changed-my-mind", "save", {"input": "podcast-ep-1.mp3", "format": "wav"}),
        ],
        cancel_id="changed-my-mind",
        cancel_when=lambda row: row.status == "processing" and bool(row.k8s_job),
    )
