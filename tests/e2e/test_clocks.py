"""The clocks: stage/progress reach the row; stale heartbeats, stalled progress and pods that
never start are acted on."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import running_pod, wait_for

pytestmark = pytest.mark.cluster


def hang(**more: str) -> str:
    return json.dumps({"audiojob.dev/sim-outcome": "hang", **more})


def test_stage_and_progress_from_pod_annotations_reach_the_row(
    controller, rows, core_v1, namespace
):
    controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=hang())
    rows.insert("prog")
    pod = running_pod(core_v1, namespace)
    core_v1.patch_namespaced_pod(
        pod.metadata.name,
        namespace,
        {
            "metadata": {
                "annotations": {
                    "audiojob.dev/stage": "transcoding",
                    "audiojob.dev/progress": "40",
                    "audiojob.dev/heartbeat": str(int(time.time() * 1000)),
                }
            }
        },
    )
    row = wait_for(
        lambda: (r := rows.get("prog")).progress == 40 and r,
        timeout=30,
        message="progress 40 in the row",
    )
    assert row.stage == "transcoding" and row.status == "processing"


def test_stale_runner_heartbeat_deletes_the_pod_then_retries(controller, rows):
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=hang(), AUDIOJOB_TIMEOUTS__HEARTBEAT_STALE_SECONDS="3"
    )
    rows.insert("stale")
    row = rows.wait_status("stale", "failed", timeout=120)
    assert row.attempt == 2 and row.retry_count == 1
    assert "no heartbeat" in row.error and "limit 3 s" in row.error


def test_stalled_progress_deletes_the_pod(controller, rows):
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=hang(), AUDIOJOB_TIMEOUTS__PROGRESS_STALLED_SECONDS="3"
    )
    rows.insert("stall")
    row = rows.wait_status("stall", "failed", timeout=120)
    assert "progress stalled" in row.error and row.attempt == 2


def test_a_pod_that_never_starts_fails_after_the_pending_timeout(controller, rows):
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps(
            {"audiojob.dev/sim-outcome": "waiting", "audiojob.dev/sim-reason": "ContainerCreating"}
        ),
        AUDIOJOB_TIMEOUTS__PENDING_SECONDS="3",
    )
    rows.insert("stuck")
    row = rows.wait_status("stuck", "failed", timeout=120)
    assert row.error_kind == "permanent" and "did not start within 3 s" in row.error
