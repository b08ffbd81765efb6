"""Sends progress where the controller (or a person) can see it, from a background thread.

In a pod: merge-patches the runner's own pod annotations `audiojob.dev/stage|progress|heartbeat`
at most every 2 s, and at least every HEARTBEAT_SECONDS so a quiet stage does not look stale.
Outside a pod: one line per change on stderr. A failed patch is logged and the job goes on;
the controller judges a silent runner by its heartbeat, not the runner itself.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
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


class Sink(Protocol):
    min_interval: float

    def send(self, state: ProgressState, heartbeat_ms: int) -> None: ...


class StderrSink:
    min_interval = STDERR_INTERVAL

    def send(self, state: ProgressState, heartbeat_ms: int) -> None:
        detail = f" {state.detail}" if state.detail else ""
        print(f"progress stage={state.stage} percent={state.percent}{detail}", file=sys.stderr)
        sys.stderr.flush()


class PodAnnotationSink:
    min_interval = POD_PATCH_INTERVAL

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


def pod_sink_from_env(environ: dict[str, str]) -> PodAnnotationSink | None:
    """A sink for this pod when POD_NAME/POD_NAMESPACE and credentials are present.

    Credentials come from KUBECONFIG when it is set (so the runner can run on a host against
    a real pod object), else from the in-cluster service-account token.
    """
    pod, namespace = environ.get(ENV_POD_NAME), environ.get(ENV_POD_NAMESPACE)
    if not pod or not namespace:
        return None
    # Imported here: the kubernetes client takes a noticeable time to import and is useless
    # outside a pod.
    from kubernetes import client, config  # noqa: PLC0415

    try:
        if environ.get("KUBECONFIG"):
            api_client = config.new_client_from_config()  # type: ignore[no-untyped-call]
        else:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api_client = client.ApiClient(configuration)
    except (config.ConfigException, OSError) as e:
        log.warning("progress goes to stderr: no Kubernetes credentials for pod %s (%s)", pod, e)
        return None
    return PodAnnotationSink(client.CoreV1Api(api_client), pod=pod, namespace=namespace)


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
        """Stop the thread; send the final state if the throttle allows it within 0.5 s."""
        self._stop.set()
        self._thread.join(timeout=PATCH_TIMEOUT[0] + PATCH_TIMEOUT[1] + 1)
        if self._thread.is_alive() or self._progress.state == self._last:
            return
        wait = self._last_sent + self._sink.min_interval - time.monotonic()
        if wait <= 0.5:
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
