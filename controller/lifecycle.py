"""The rules of a job's life, in one place: what a Job and its pod say about the row.

Everything here is pure: it reads snapshots of Kubernetes objects (controller.snapshots) and
returns a decision with a sentence a person can act on, and what to remember until the next
cycle. The engine carries decisions out.

Ownership (who may act on which row)
------------------------------------
- An *installation* is one controller deployment with one identity (`AUDIOJOB_INSTALLATION`,
  default `audiojob-operator.<jobs namespace>`). It claims rows with that identity in
  `claimed_by`, keeps its lease on them in the workers table (`worker_id` = the identity,
  `last_seen` stamped by the database's clock), and heartbeats and adopts only rows it
  claimed. A restarted controller pod has the same identity and adopts its rows at once.
- Within an installation one engine acts: the holder of the Kubernetes Lease named after the
  identity, in the jobs namespace (engine.leader). The others stand by, not ready. A holder
  that could not renew for `renew_deadline_seconds` stops acting before a standby, which waits
  `lease_seconds` without seeing the Lease change, can take it.
- Rows of another installation are never touched while its lease is fresh. When it is older
  than `owner_lease_seconds` by the database's clock, the row is taken over with ONE fenced
  UPDATE that bumps `attempt` (store.ownership) — and only after the row's `run_deadline` has
  passed: the owner wrote it at claim (`run_deadlines`: the database's clock plus its own
  pending + run timeout + grace + margin), so its pod cannot still be running whatever the
  taker's own timeouts are (Kubernetes enforces `activeDeadlineSeconds` with no controller);
  or at once when the old Job is in the taker's own view and finished (the taker then sets
  that Job's TTL). A dead installation's cancelled
  rows are finalized on the same terms, without a new attempt. Only the leader looks, every
  `takeover_interval_seconds` and at each reconcile: one statement, which reads job rows
  only while some installation's lease has run out recently enough for its rows to become
  eligible (store.ownership).
- A Job missing from the view means "gone" only when the view was listed after this controller
  created (or learned of) the Job, or showed the Job since: a list sent before a create
  cannot show it (`decide(view_after_create=...)`).
- Clocks: leases between installations use only the database's clock; the Kubernetes Lease is
  judged by each process's monotonic clock; cycle intervals are monotonic. A controller's
  wall clock that jumps therefore cannot make anyone take over a live owner's rows; the run
  deadline is written and compared on the database's clock, and `takeover_margin_seconds`
  absorbs the delay between the claim and the Job's start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from controller.settings import TimeoutSettings
from controller.snapshots import JobView, PodView
from runner import contract as c
from runner.messages import FailureMessage, SuccessMessage, parse_termination_message
from runner.payloads import JOB_TYPES

__all__ = ["JobView", "PodView"]  # re-exported: the rules' inputs

IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
TRANSIENT_POD_REASONS = frozenset(
    {
        "Evicted",
        "NodeLost",
        "Preempting",
        "Shutdown",
        "Terminated",
        "NodeShutdown",
        "UnexpectedAdmissionError",
    }
)


def human_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    if seconds >= 120:
        return f"{math.ceil(seconds / 60)} min"
    return f"{int(seconds)} s"


@dataclass(frozen=True)
class Clocks:
    """The clocks for one job (docs/architecture.md, "What decides an outcome"), in seconds."""

    job_type: str
    run_timeout: int
    pending_timeout: int
    heartbeat_stale: int
    progress_stalled: int


def clocks_for(timeouts: TimeoutSettings, job_type: str) -> Clocks:
    """The clocks of one job type (an unknown type gets ingest's; it fails at claim anyway)."""
    known = job_type in JOB_TYPES
    return Clocks(
        job_type=job_type,
        run_timeout=timeouts.run_timeout(job_type) if known else timeouts.ingest_seconds,
        pending_timeout=timeouts.pending_seconds,
        heartbeat_stale=timeouts.heartbeat_stale_seconds,
        progress_stalled=timeouts.progress_stalled_seconds,
    )


# -- decisions --------------------------------------------------------------------------

Kind = Literal["transient", "permanent", "timeout", "lost"]


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet."""


@dataclass(frozen=True)
class Running:
    stage: str | None
    progress: int | None


@dataclass(frozen=True)
class Complete:
    result: dict[str, Any]


@dataclass(frozen=True)
class Fail:
    kind: Kind
    error: str


@dataclass(frozen=True)
class Retry:
    """Transient: retry once the pod is confirmed gone (the store decides retry vs. fail)."""

    error: str
    kind: Kind = "transient"


@dataclass(frozen=True)
class Kill:
    """Delete the pod, then (once it is gone) record `then`."""

    then: Fail | Retry


@dataclass(frozen=True)
class CreateJob:
    """The row is processing but its Job does not exist (yet)."""


Decision = Wait | Running | Complete | Fail | Retry | Kill | CreateJob


@dataclass(frozen=True)
class Progress:
    """What the controller remembers between cycles about one running attempt."""

    last_progress: int | None = None
    last_progress_change_ms: int | None = None
    first_seen_running_ms: int | None = None


def timeout_message(clocks: Clocks) -> str:
    return f"timed out after {human_duration(clocks.run_timeout)} ({clocks.job_type} limit)"


def decide(
    *,
    job: JobView | None,
    pod: PodView | None,
    clocks: Clocks,
    claimed_ms: int,
    now_ms: int,
    memory: Progress,
    job_was_created: bool,
    view_after_create: bool = True,
) -> tuple[Decision, Progress]:
    """What to do about one processing row, given its Job and newest pod, and what to remember
    about it until the next cycle.

    `view_after_create`: the view was (re)built after this controller's create of the Job
    returned, so a Job missing from it really is gone (see "Ownership" above).
    """
    if job is None:
        if job_was_created:
            if not view_after_create:
                return Wait(), memory
            return Retry(
                "its Kubernetes Job disappeared before it finished (deleted by someone else?)",
                kind="lost",
            ), memory
        if now_ms - claimed_ms > clocks.pending_timeout * 1000:
            return Retry(
                "no Kubernetes Job could be created within "
                f"{human_duration(clocks.pending_timeout)}",
                kind="lost",
            ), memory
        return CreateJob(), memory
    if pod is not None and pod.finished:
        return _finished(job, pod, clocks), memory
    if pod is None or pod.deleting or pod.phase == "Pending" or job.deadline_exceeded:
        return _not_running(job, pod, clocks, now_ms), memory
    return _running(pod, clocks, now_ms, memory)


def _not_running(job: JobView, pod: PodView | None, clocks: Clocks, now_ms: int) -> Decision:
    if job.deadline_exceeded:
        return Fail("timeout", timeout_message(clocks))
    if job.finished and pod is None:
        if job.disrupted:
            return Retry(
                f"its pod was disrupted (evicted, preempted or its node went away) and "
                f"deleted: {job.failed_message}"
            )
        # The pod is gone and only the Job saw how it ended: someone deleted it.
        if job.succeeded:
            return Retry(
                f"its pod finished but was deleted before its result was read (Kubernetes "
                f"Job {job.name})",
                kind="lost",
            )
        return Retry(
            f"its pod was deleted before it finished (Kubernetes Job {job.name}: "
            f"{job.failed_message or 'failed'})",
            kind="lost",
        )
    if pod is None:
        if now_ms - job.created_ms > clocks.pending_timeout * 1000:
            return Kill(
                Fail(
                    "permanent",
                    f"no pod was created for Job {job.name} within "
                    f"{human_duration(clocks.pending_timeout)}; check the namespace's "
                    "quota, admission policies and the Job's events",
                )
            )
        return Wait()
    if pod.deleting:
        return Wait()
    if pod.waiting_reason in IMAGE_ERRORS:
        detail = f": {pod.waiting_message}" if pod.waiting_message else ""
        return Kill(
            Fail(
                "permanent",
                f"pod {pod.name} could not start the runner: "
                f"{pod.waiting_reason}{detail}; check the runner image and its "
                "configuration",
            )
        )
    if now_ms - pod.created_ms > clocks.pending_timeout * 1000:
        if pod.unschedulable_message:
            why = f"it could not be scheduled: {pod.unschedulable_message}"
        else:
            why = f"it was still {pod.waiting_reason or 'Pending'}"
        return Kill(
            Fail(
                "permanent",
                f"pod {pod.name} did not start within "
                f"{human_duration(clocks.pending_timeout)}; {why}",
            )
        )
    return Wait()


def _running(
    pod: PodView, clocks: Clocks, now_ms: int, memory: Progress
) -> tuple[Decision, Progress]:
    started = pod.started_ms or pod.created_ms
    if memory.first_seen_running_ms is None:
        memory = replace(memory, first_seen_running_ms=now_ms)
    if pod.progress is not None and pod.progress != memory.last_progress:
        memory = replace(memory, last_progress=pod.progress, last_progress_change_ms=now_ms)
    first_seen = memory.first_seen_running_ms or now_ms
    last_beat = max(pod.heartbeat_ms or 0, started, first_seen)
    if now_ms - last_beat > clocks.heartbeat_stale * 1000:
        return Kill(
            Retry(
                f"the runner sent no heartbeat for {human_duration((now_ms - last_beat) / 1000)}"
                f" (limit {human_duration(clocks.heartbeat_stale)}); its pod was deleted"
            )
        ), memory
    since_progress = memory.last_progress_change_ms or first_seen
    if now_ms - since_progress > clocks.progress_stalled * 1000:
        at = f"{memory.last_progress}%" if memory.last_progress is not None else "the start"
        return Kill(
            Retry(
                f"progress stalled at {at} for {human_duration(clocks.progress_stalled)}; "
                "its pod was deleted"
            )
        ), memory
    return Running(stage=pod.stage, progress=pod.progress), memory


def _finished(job: JobView, pod: PodView, clocks: Clocks) -> Decision:
    message = parse_termination_message(pod.term_message)
    if pod.phase == "Succeeded":
        if isinstance(message, SuccessMessage):
            return Complete(message.result)
        if isinstance(message, FailureMessage):
            return _failure_from_message(message)
        # Exit 0 without the runner's result: not our runner, so nothing says the work was done.
        left = "no termination message" if not pod.term_message else "no valid result"
        return Fail(
            "permanent",
            f"pod {pod.name} exited 0 but left {left}; the runner writes its result to "
            "/dev/termination-log, so check that the Job runs the audiojob-operator image "
            "with its own command (runner.image, no command override)",
        )
    # Failed
    if job.deadline_exceeded or pod.pod_reason == "DeadlineExceeded":
        return Fail("timeout", timeout_message(clocks))
    if pod.term_reason == "OOMKilled":
        limit = pod.memory_limit or "its"
        return Fail(
            "permanent",
            f"the runner ran out of memory: it exceeded its {limit} memory "
            f"limit (OOMKilled); raise the memory limit for {clocks.job_type} jobs",
        )
    if pod.disrupted:
        return Retry(f"pod {pod.name} was disrupted ({pod.disrupted})")
    if pod.pod_reason in TRANSIENT_POD_REASONS:
        where = f" on node {pod.node}" if pod.node else ""
        detail = f": {pod.pod_message}" if pod.pod_message else ""
        return Retry(f"pod {pod.name} was {pod.pod_reason.lower()}{where}{detail}")
    if isinstance(message, FailureMessage):
        if pod.exit_code == c.EXIT_TRANSIENT:
            return Retry(message.error)
        if pod.exit_code == c.EXIT_PERMANENT:
            return Fail("permanent", message.error)
        return _failure_from_message(message)
    if pod.exit_code == c.EXIT_TRANSIENT:
        return Retry("the runner exited with code 75 (temporary failure) and left no message")
    if pod.exit_code == c.EXIT_PERMANENT:
        return Fail("permanent", "the runner rejected its input (exit 65) and left no message")
    if pod.exit_code in (137, 143):
        return Retry(
            f"the runner was killed by a signal (exit {pod.exit_code}) that the "
            "controller did not send"
        )
    tail = f": {pod.term_message[:300]}" if pod.term_message else ""
    return Fail(
        "permanent",
        f"the runner crashed with exit code {pod.exit_code} ({pod.term_reason or 'Error'}){tail}",
    )


def _failure_from_message(message: FailureMessage) -> Decision:
    if message.kind == "transient":
        return Retry(message.error)
    return Fail("permanent", message.error)


# -- rules that span cycles -------------------------------------------------------------


def after_kill(then: Fail | Retry, pods: Sequence[PodView]) -> Fail | Retry | None:
    """Kill, then confirm: the outcome decided when the pod was deleted is recorded only once
    no pod of the Job is left, so a retry can never run beside the old pod."""
    return then if not pods else None


def settle(decision: Decision, pods: Sequence[PodView]) -> Decision:
    """A retry waits until every pod of the old attempt has finished or is gone."""
    if isinstance(decision, Retry) and not all(p.finished for p in pods):
        return Wait()
    return decision


def orphan_to_delete(job: JobView, pods: Sequence[PodView], row_status: str | None) -> bool:
    """A Job nobody here runs is deleted when its row is finished, cancelled or missing; one
    whose row is still `processing` belongs to whoever owns that row. A Job whose pods have all
    finished is left alone: its own status may just not say so yet, and its TTL collects it."""
    if job.finished or job.deleting or (pods and all(p.finished for p in pods)):
        return False
    return row_status is None or row_status in ("complete", "failed", "cancelled")


def run_deadlines(timeouts: TimeoutSettings, *, margin: int) -> dict[str, int]:
    """The run deadline of every job type, in ms after a claim (written on each claimed row)."""
    grace = timeouts.cancel_grace_seconds
    return {
        str(t): run_deadline_ms(clocks_for(timeouts, str(t)), cancel_grace=grace, margin=margin)
        for t in JOB_TYPES
    }


def run_deadline_ms(clocks: Clocks, *, cancel_grace: int, margin: int) -> int:
    """How long after a claim its pod can still be running, even with no controller at all.

    The owner creates the Job within `pending_timeout` of the claim or gives the attempt up;
    Kubernetes ends the Job's pods `activeDeadlineSeconds` (the run timeout) after the Job
    starts, and gives them `cancel_grace` to stop. `margin` covers clock skew between the
    claimer and the database and the kube-controller-manager's own delay.
    """
    return (clocks.pending_timeout + clocks.run_timeout + cancel_grace + margin) * 1000
