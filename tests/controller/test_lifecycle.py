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
    after_kill,
    decide,
    orphan_to_delete,
    run_deadline_ms,
    settle,
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
    return step(j, p, now=now, created=created, memory=memory)[0]


def step(
    j: JobView | None,
    p: PodView | None,
    *,
    now: int = T0 + 1000,
    created: bool = True,
    memory: Progress | None = None,
    view_after_create: bool = True,
) -> tuple[object, Progress]:
    return decide(
        job=j,
        pod=p,
        clocks=CLOCKS,
        claimed_ms=T0,
        now_ms=now,
        memory=memory or Progress(),
        job_was_created=created,
        view_after_create=view_after_create,
    )


def test_success_message_completes_with_its_result() -> None:
    message = json.dumps({"ok": True, "result": {"path": "/d/a.mp3"}})
    decision = run(
        job(type="Complete"), pod("Succeeded", terminated={"exitCode": 0, "message": message})
    )
    assert decision == Complete({"path": "/d/a.mp3"})


@pytest.mark.parametrize(
    ("message", "left"),
    [
        (None, "no termination message"),
        ("", "no termination message"),
        ("done!", "no valid result"),
        ('{"ok": true, "result": [1, 2]}', "no valid result"),
        ('["ok"]', "no valid result"),
    ],
)
def test_a_success_without_a_result_fails_the_row_and_names_the_likely_cause(
    message: str | None, left: str
) -> None:
    """A wrong image or command that exits 0 must not complete the row with `{}`."""
    terminated: dict[str, object] = {"exitCode": 0}
    if message is not None:
        terminated["message"] = message
    decision = run(job(type="Complete"), pod("Succeeded", terminated=terminated))
    assert isinstance(decision, Fail) and decision.kind == "permanent"
    assert f"exited 0 but left {left}" in decision.error
    assert "audiojob-operator image" in decision.error


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
    before = Progress()
    decision, memory = step(job(), pod(annotations=ann), memory=before)
    assert decision == Running("render", 100)
    assert before == Progress(), "decide returns its memory, it never mutates the argument"
    beat = ann | {"audiojob.dev/heartbeat": str(T0 + 30_000)}
    decision, memory = step(job(), pod(annotations=beat), now=T0 + 80_000, memory=memory)
    assert decision == Running("render", 100)
    stale, _ = step(job(), pod(annotations=beat), now=T0 + 91_000, memory=memory)
    assert isinstance(stale, Kill) and "no heartbeat" in stale.then.error


def test_a_missing_job_is_lost_only_when_the_view_is_newer_than_its_create() -> None:
    # The race of issue 12: a list sent before our own create cannot show that Job.
    assert step(None, None, created=True, view_after_create=False)[0] == Wait()
    lost = step(None, None, created=True, view_after_create=True)[0]
    assert isinstance(lost, Retry) and lost.kind == "lost"


def test_a_retry_waits_until_the_old_pod_has_finished() -> None:
    running = pod("Running")
    done = pod("Failed", terminated={"exitCode": 75})
    assert settle(Retry("x"), [done, running]) == Wait()
    assert settle(Retry("x"), [done]) == Retry("x")
    assert settle(Fail("permanent", "y"), [running]) == Fail("permanent", "y")


def test_kill_then_confirm() -> None:
    then = Retry("stale heartbeat")
    assert after_kill(then, [pod("Running")]) is None
    assert after_kill(then, []) == then


@pytest.mark.parametrize(
    ("status", "deleted"),
    [(None, True), ("complete", True), ("failed", True), ("cancelled", True),
     ("processing", False), ("pending", False)],
)  # fmt: skip
def test_orphans_are_deleted_only_when_their_row_is_done(status: str | None, deleted: bool) -> None:
    assert orphan_to_delete(job(), [], status) is deleted
    assert orphan_to_delete(job(), [pod("Running")], status) is deleted
    assert orphan_to_delete(job(type="Complete"), [], status) is False
    # The pod is done and the Job's status is about to say so.
    assert orphan_to_delete(job(), [pod("Succeeded")], status) is False


def test_run_deadline_covers_pending_run_and_grace() -> None:
    assert run_deadline_ms(CLOCKS, cancel_grace=5, margin=30) == (120 + 600 + 5 + 30) * 1000
