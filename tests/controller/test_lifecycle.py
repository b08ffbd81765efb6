"""The pure rules in controller/lifecycle.py, on object snapshots shaped like the API's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.lifecycle import (
    Clocks,
    Complete,
    CreateJob,
    Fail,
    JobView,
    Kill,
    PodView,
    Progress,
    Retry,
    Running,
    Wait,
    decide,
)

T0 = 1_800_000_000_000
CLOCKS = Clocks(
    job_type="ingest",
    run_timeout=600,
    pending_timeout=120,
    heartbeat_stale=60,
    progress_stalled=300,
)


def iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def job(created: int = T0, **cond: str) -> JobView:
    conds = [cond] if cond else []
    return JobView.from_body(
        {
            "metadata": {"name": "aj-a-1", "creationTimestamp": iso(created)},
            "status": {"conditions": [{"status": "True", **c} for c in conds]},
        }
    )


def pod(
    phase: str = "Running",
    *,
    terminated: dict[str, Any] | None = None,
    waiting: dict[str, Any] | None = None,
    conditions: list[dict[str, str]] | None = None,
    annotations: dict[str, str] | None = None,
    created: int = T0,
    **status: Any,
) -> PodView:
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {}
    return PodView.from_body(
        {
            "metadata": {
                "name": "aj-a-1-x",
                "creationTimestamp": iso(created),
                "annotations": annotations or {},
            },
            "spec": {
                "nodeName": "n1",
                "containers": [{"resources": {"limits": {"memory": "1Gi"}}}],
            },
            "status": {
                "phase": phase,
                "startTime": iso(created),
                "containerStatuses": [{"state": state}],
                "conditions": conditions or [],
                **status,
            },
        }
    )


def run(
    j: JobView | None,
    p: PodView | None,
    *,
    now: int = T0 + 1000,
    created: bool = True,
    memory: Progress | None = None,
) -> object:
    return decide(
        job=j,
        pod=p,
        clocks=CLOCKS,
        claimed_ms=T0,
        now_ms=now,
        memory=memory or Progress(),
        job_was_created=created,
    )


def test_success_message_completes_with_its_result() -> None:
    message = json.dumps({"ok": True, "result": {"path": "/d/a.mp3"}})
    decision = run(
        job(type="Complete"), pod("Succeeded", terminated={"exitCode": 0, "message": message})
    )
    assert decision == Complete({"path": "/d/a.mp3"})


@pytest.mark.parametrize(
    ("exit_code", "kind"), [(75, Retry), (65, Fail), (143, Retry), (137, Retry), (1, Fail)]
)
def test_exit_codes(exit_code: int, kind: type) -> None:
    decision = run(job(type="Failed"), pod("Failed", terminated={"exitCode": exit_code}))
    assert isinstance(decision, kind)


def test_oom_names_the_limit() -> None:
    decision = run(
        job(type="Failed"), pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})
    )
    assert isinstance(decision, Fail) and "1Gi memory limit" in decision.error


def test_a_disrupted_pod_that_is_still_there_is_retried() -> None:
    target = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    decision = run(
        job(type="Failed"),
        pod("Failed", terminated={"exitCode": 137}, conditions=[target]),
    )
    assert isinstance(decision, Retry) and "EvictionByEvictionAPI" in decision.error


def test_a_disrupted_pod_that_is_gone_is_retried_from_the_job_condition() -> None:
    message = "Pod ns/aj-a-1-x has condition DisruptionTarget matching FailJob rule at index 0"
    decision = run(job(type="Failed", reason="PodFailurePolicy", message=message), None)
    assert decision == Retry(
        "its pod was disrupted (evicted, preempted or its node went away) and deleted: " + message
    )


def test_a_pod_deleted_by_someone_else_is_a_lost_attempt_not_a_permanent_failure() -> None:
    decision = run(
        job(type="Failed", reason="BackoffLimitExceeded", message="Job has reached the limit"),
        None,
    )
    assert isinstance(decision, Retry) and decision.kind == "lost"
    decision = run(job(type="Complete"), None)
    assert isinstance(decision, Retry) and "before its result was read" in decision.error


def test_deadline_is_a_timeout() -> None:
    decision = run(job(type="Failed", reason="DeadlineExceeded"), None)
    assert decision == Fail("timeout", "timed out after 10 min (ingest limit)")


def test_missing_job() -> None:
    assert run(None, None, created=False) == CreateJob()
    assert isinstance(run(None, None, created=True), Retry)
    late = run(None, None, created=False, now=T0 + 121_000)
    assert isinstance(late, Retry) and late.kind == "lost"


def test_image_errors_kill_at_once() -> None:
    decision = run(job(), pod("Pending", waiting={"reason": "ImagePullBackOff"}))
    assert isinstance(decision, Kill) and isinstance(decision.then, Fail)
    assert "ImagePullBackOff" in decision.then.error


def test_pending_pod_waits_then_fails_after_the_pending_timeout() -> None:
    assert run(job(), pod("Pending")) == Wait()
    decision = run(job(), pod("Pending"), now=T0 + 121_000)
    assert isinstance(decision, Kill) and "did not start within 2 min" in decision.then.error


def test_running_reports_stage_and_progress_until_the_heartbeat_goes_stale() -> None:
    ann = {"audiojob.dev/stage": "render", "audiojob.dev/progress": "140"}
    memory = Progress()
    assert run(job(), pod(annotations=ann), memory=memory) == Running("render", 100)
    beat = ann | {"audiojob.dev/heartbeat": str(T0 + 30_000)}
    assert run(job(), pod(annotations=beat), now=T0 + 80_000, memory=memory) == Running(
        "render", 100
    )
    stale = run(job(), pod(annotations=beat), now=T0 + 91_000, memory=memory)
    assert isinstance(stale, Kill) and "no heartbeat" in stale.then.error
