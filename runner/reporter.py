"""Sends progress where the controller (or a person) can see it, from a background thread.

In a pod: merge-patches the runner's own pod annotations `audiojob.dev/stage|progress|heartbeat`
at most every 2 s, and at least every HEARTBEAT_SECONDS so a quiet stage does not look stale.
Outside a pod: one line per change on stderr. A failed patch is logged and the job goes on;
the controller judges a silent runner by its heartbeat, not the runner itself.

In a pod the patch goes out through the standard library (`InClusterPatcher`), not the
kubernetes client: importing that client took 0.4-1.3 s of the runner's start (bench_runner.py,
"the runner's fixed cost"), for one kind of request.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from runner.contract import (
    ANN_HEARTBEAT,
    ANN_PROGRESS,
    ANN_STAGE,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
)
from runner.progress import Progress, ProgressState

log = logging.getLogger(__name__)

POD_PATCH_INTERVAL = 2.0  # seconds; docs/runner.md: "at most every 2 s"
STDERR_INTERVAL = 0.5  # seconds; a terminal can take more, a log pipeline should not
HEARTBEAT_SECONDS = 15.0  # well inside the controller's 60 s staleness limit
PATCH_TIMEOUT = (3.0, 5.0)  # connect, read: a hung API server must not stall the reporter
FINAL_WAIT = 0.5  # seconds stop() may wait for the throttle before the last state, by default
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class Sink(Protocol):
    min_interval: float
    """Seconds between two sends at least."""

    def send(self, state: ProgressState, heartbeat_ms: int) -> None: ...


class StderrSink:
    min_interval = STDERR_INTERVAL
    # A line costs nothing: the last one ("done") is printed at once, never waited for.
    final_wait = 0.0
    final_unthrottled = True

    def send(self, state: ProgressState, heartbeat_ms: int) -> None:
        detail = f" {state.detail}" if state.detail else ""
        print(f"progress stage={state.stage} percent={state.percent}{detail}", file=sys.stderr)
        sys.stderr.flush()


class PodAnnotationSink:
    min_interval = POD_PATCH_INTERVAL
    # The controller takes the end from the termination message, so the exit never waits for
    # the throttle (up to 0.5 s it did); but the last state goes out at once, one patch at most:
    # `kubectl get pods` (the chart's NOTES, `audiojob status`) shows it for the finished pod,
    # which otherwise kept "starting 0" after a job shorter than the 2 s throttle.
    final_wait = 0.0
    final_unthrottled = True

    def __init__(self, api: Any, *, pod: str, namespace: str) -> None:
        self._api = api
        self.pod = pod
        self.namespace = namespace

    def send(self, state: ProgressState, heartbeat_ms: int) -> None:
        body = {
            "metadata": {
                "annotations": {
                    ANN_STAGE: state.stage,
                    ANN_PROGRESS: str(state.percent),
                    ANN_HEARTBEAT: str(heartbeat_ms),
                }
            }
        }
        self._api.patch_namespaced_pod(
            self.pod, self.namespace, body, _request_timeout=PATCH_TIMEOUT
        )


class InClusterPatcher:
    """`patch_namespaced_pod` as a JSON merge patch over HTTPS with the pod's service-account
    token, re-read for every request (the kubelet rotates the projected token in place).

    One connection, kept alive between patches: a new connection per patch (urllib) cost a TLS
    handshake each time, and urllib.request's import, in CPU the runner adds to ffmpeg's
    (bench/bench_runner.py); the last patch, sent at exit, also waited for a handshake."""

    def __init__(self, environ: dict[str, str], directory: Path = SERVICE_ACCOUNT_DIR) -> None:
        host = environ.get("KUBERNETES_SERVICE_HOST", "")
        port = environ.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise OSError("KUBERNETES_SERVICE_HOST/PORT are not set")
        self._token = directory / "token"
        ca = directory / "ca.crt"
        self._token.read_text()  # fail now (no token mounted), not at every tick
        import ssl  # noqa: PLC0415 - only pods pay for it

        self._context = ssl.create_default_context(cafile=str(ca))
        self.host, self.port = host, int(port)
        self._conn: Any = None  # http.client.HTTPSConnection, imported in the reporter thread
        self.connections = 0
        """Connections opened so far (a test checks that patches share one)."""

    def patch_namespaced_pod(
        self, name: str, namespace: str, body: dict[str, Any], **_: object
    ) -> None:
        import http.client  # noqa: PLC0415 - after the job has started, in the thread

        data = json.dumps(body).encode()
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        while True:
            reused = self._conn is not None
            if self._conn is None:
                # IPv6 literals go in bare: http.client brackets them itself.
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=sum(PATCH_TIMEOUT), context=self._context
                )
                self.connections += 1
            headers = {
                "Authorization": f"Bearer {self._token.read_text().strip()}",
                "Content-Type": "application/merge-patch+json",
                "Accept": "application/json",
            }
            try:
                self._conn.request("PATCH", path, body=data, headers=headers)
                response = self._conn.getresponse()
                answer = response.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if reused:
                    continue  # the server closed the idle connection: once more on a new one
                raise
            if response.will_close:
                self.close()
            if response.status >= 400:  # the API's own sentence (e.g. the admission policy)
                detail = answer[:300].decode(errors="replace")
                raise OSError(f"HTTP {response.status} patching pod {name}: {detail}")
            return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def pod_sink_from_env(environ: dict[str, str]) -> PodAnnotationSink | None:
    """A sink for this pod when POD_NAME/POD_NAMESPACE and credentials are present.

    Credentials come from KUBECONFIG when it is set (so the runner can run on a host against
    a real pod object, through the kubernetes client), else from the in-cluster
    service-account token (`InClusterPatcher`).
    """
    pod, namespace = environ.get(ENV_POD_NAME), environ.get(ENV_POD_NAMESPACE)
    if not pod or not namespace:
        return None
    api: Any
    try:
        if environ.get("KUBECONFIG"):
            # Imported here: the kubernetes client takes a noticeable time to import.
            from kubernetes import client, config  # noqa: PLC0415

            try:
                api = client.CoreV1Api(config.new_client_from_config())  # type: ignore[no-untyped-call]
            except config.ConfigException as e:
                raise OSError(str(e)) from None
        else:
            api = InClusterPatcher(environ)
    except OSError as e:
        log.warning("progress goes to stderr: no Kubernetes credentials for pod %s (%s)", pod, e)
        return None
    return PodAnnotationSink(api, pod=pod, namespace=namespace)


class Reporter:
    def __init__(self, progress: Progress, sink: Sink) -> None:
        self._progress = progress
        self._sink = sink
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress-reporter", daemon=True)
        self._last: ProgressState | None = None
        self._last_sent = float("-inf")
        self._failures = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; send the final state if the throttle allows it within the sink's
        `final_wait` (0.5 s unless it says otherwise), or at once if it is `final_unthrottled`."""
        self._stop.set()
        self._thread.join(timeout=PATCH_TIMEOUT[0] + PATCH_TIMEOUT[1] + 1)
        if self._thread.is_alive() or self._progress.state == self._last:
            return
        if getattr(self._sink, "final_unthrottled", False):
            self._send(self._progress.state)
            return
        wait = self._last_sent + self._sink.min_interval - time.monotonic()
        if wait <= getattr(self._sink, "final_wait", FINAL_WAIT):
            time.sleep(max(0.0, wait))
            self._send(self._progress.state)

    def _loop(self) -> None:
        while True:
            state = self._progress.state
            due = time.monotonic() - self._last_sent >= HEARTBEAT_SECONDS
            if state != self._last or due:
                self._send(state)
            if self._stop.wait(self._sink.min_interval):
                return

    def _send(self, state: ProgressState) -> None:
        self._last_sent = time.monotonic()
        try:
            self._sink.send(state, heartbeat_ms=int(time.time() * 1000))
            # Only a delivered state counts as sent: a failed one goes again at the next tick.
            self._last = state
        except Exception as e:  # any failure: the job matters more than its progress bar
            self._failures += 1
            if self._failures == 1 or self._failures % 30 == 0:
                log.warning("could not report progress (failure %d): %s", self._failures, e)
        else:
            if self._failures:
                log.info("progress reporting recovered after %d failures", self._failures)
            self._failures = 0


def make_reporter(progress: Progress, environ: dict[str, str] | None = None) -> Reporter:
    env = dict(os.environ if environ is None else environ)
    sink: Sink | None = pod_sink_from_env(env)
    return Reporter(progress, sink if sink is not None else StderrSink())
