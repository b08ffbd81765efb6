"""Cancel and timeout on real pods: the row's cancellation stops the real ffmpeg inside the
container with SIGTERM, within the grace period, and nothing of it is left on the host; a run
past its timeout is killed by the Job's activeDeadlineSeconds."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import kubernetes
import pytest

from tests.e2e.conftest import Controller, Rows
from tests.helpers import wait_for
from tests.realnode.conftest import node_processes

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]
GRACE_SECONDS = 2  # the e2e controller's AUDIOJOB_TIMEOUTS__CANCEL_GRACE_SECONDS


def watch_exit_codes(core_v1: kubernetes.client.CoreV1Api, namespace: str) -> dict[str, int]:
    """Container exit codes of the namespace's pods as the kubelet reports them, collected
    in the background (a deleted pod's last status is visible only on the watch)."""
    codes: dict[str, int] = {}

    def run() -> None:
        w = kubernetes.watch.Watch()
        # The stream ends with the test (its namespace and client go away): nothing to report.
        with contextlib.suppress(Exception):
            for event in w.stream(core_v1.list_namespaced_pod, namespace, timeout_seconds=300):
                pod: Any = event["object"]
                for cs in (pod.status.container_statuses or []) if pod.status else []:
                    if cs.state and cs.state.terminated:
                        codes[pod.metadata.name] = cs.state.terminated.exit_code

    threading.Thread(target=run, daemon=True).start()
    return codes


def test_cancel_stops_ffmpeg_in_the_container(
    real_controller: Controller,
    rows: Rows,
    long_source: str,
    core_v1: kubernetes.client.CoreV1Api,
    namespace: str,
) -> None:
    rows.insert("cancel-me", "ingest", {"url": long_source, "normalize_loudness": True})
    codes = watch_exit_codes(core_v1, namespace)
    real_controller.start()
    wait_for(
        lambda: rows.get("cancel-me").stage == "transcoding" and node_processes("ffmpeg"),
        timeout=180,
        interval=0.2,
        message="the runner's ffmpeg to be transcoding in the pod",
    )
    pod = core_v1.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=audiojob-runner"
    ).items[0]
    started = pod.status.container_statuses[0].state.running.started_at
    start_latency = (started - pod.metadata.creation_timestamp).total_seconds()
    print(f"runner pod: created -> container running in {start_latency:.0f}s (1 s resolution)")
    t0 = time.monotonic()
    assert rows.cancel("cancel-me")
    wait_for(
        lambda: not node_processes("ffmpeg"),
        timeout=30,
        interval=0.05,
        message="ffmpeg gone from the host",
    )
    gone = time.monotonic() - t0
    row = rows.wait_status("cancel-me", "cancelled", timeout=60)
    assert row.finished_at is not None
    assert row.stage is None and row.progress == 0
    # 143: the runner stopped on SIGTERM after its ffmpeg did; SIGKILL at the end of the grace
    # period would have been 137.
    wait_for(lambda: pod.metadata.name in codes, timeout=30, message="the pod's exit code")
    assert codes[pod.metadata.name] == 143, codes
    wait_for(
        lambda: (
            not core_v1.list_namespaced_pod(
                namespace, label_selector="app.kubernetes.io/name=audiojob-runner"
            ).items
        ),
        timeout=30,
        message="the cancelled pod deleted",
    )
    assert node_processes("ffmpeg") == []
    print(f"cancel latency (row cancelled -> ffmpeg gone on the host): {gone:.2f}s")
    assert gone < GRACE_SECONDS + 5


def test_run_timeout_kills_the_pod_by_its_deadline(
    real_controller: Controller,
    rows: Rows,
    long_source: str,
    batch_v1: kubernetes.client.BatchV1Api,
    namespace: str,
) -> None:
    rows.insert("too-slow", "ingest", {"url": long_source, "normalize_loudness": True})
    real_controller.start(AUDIOJOB_TIMEOUTS__INGEST_SECONDS="8")
    row = rows.wait_status("too-slow", "failed", timeout=120)
    assert row.error_kind == "timeout", row
    job = batch_v1.list_namespaced_job(namespace).items[0]
    assert job.spec.active_deadline_seconds == 8
    reasons = {c.reason for c in job.status.conditions or []}
    assert "DeadlineExceeded" in reasons, reasons
    wait_for(lambda: not node_processes("ffmpeg"), timeout=30, message="ffmpeg gone from the host")
