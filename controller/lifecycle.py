"""The rules of a job's life, in one place: what a Job and its pod say about the row.

Everything here is pure: it reads snapshots of Kubernetes objects (plain dicts, as kopf and
the API return them) and returns a decision with a sentence a person can act on. The engine
carries decisions out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from runner import contract as c
from runner.contract import FailureMessage, SuccessMessage, parse_termination_message

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


def parse_time_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def human_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    if seconds >= 120:
        return f"{math.ceil(seconds / 60)} min"
    return f"{int(seconds)} s"


@dataclass(frozen=True)
class PodView:
    name: str
    phase: str
    created_ms: int
    node: str | None = None
    started_ms: int | None = None
    deleting: bool = False
    waiting_reason: str | None = None
    waiting_message: str = ""
    exit_code: int | None = None
    term_reason: str | None = None
    term_message: str | None = None
    pod_reason: str | None = None
    pod_message: str = ""
    unschedulable_message: str | None = None
    disrupted: str | None = None
    stage: str | None = None
    progress: int | None = None
    heartbeat_ms: int | None = None
    memory_limit: str | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> PodView:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        ann = meta.get("annotations") or {}
        statuses = status.get("containerStatuses") or []
        state = (statuses[0].get("state") or {}) if statuses else {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        unschedulable = None
        disrupted = None
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                unschedulable = cond.get("message") or "no node fits the pod"
            if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
                disrupted = (
                    f"{cond.get('reason') or 'disrupted'}: {cond.get('message') or ''}".strip()
                )
        containers = spec.get("containers") or [{}]
        limits = (containers[0].get("resources") or {}).get("limits") or {}
        progress = _int(ann.get(c.ANN_PROGRESS))
        return cls(
            name=meta.get("name", "?"),
            phase=status.get("phase") or "Pending",
            created_ms=parse_time_ms(meta.get("creationTimestamp")) or 0,
            node=spec.get("nodeName"),
            started_ms=parse_time_ms(status.get("startTime")),
            deleting=meta.get("deletionTimestamp") is not None,
            waiting_reason=waiting.get("reason"),
            waiting_message=waiting.get("message") or "",
            exit_code=_int(terminated.get("exitCode")) if terminated else None,
            term_reason=terminated.get("reason"),
            term_message=terminated.get("message"),
            pod_reason=status.get("reason"),
            pod_message=status.get("message") or "",
            unschedulable_message=unschedulable,
            disrupted=disrupted,
            stage=(ann.get(c.ANN_STAGE) or None),
            progress=None if progress is None else max(0, min(100, progress)),
            heartbeat_ms=_int(ann.get(c.ANN_HEARTBEAT)),
            memory_limit=limits.get("memory"),
        )

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class JobView:
    name: str
    created_ms: int
    deadline_exceeded: bool = False
    failed_message: str = ""
    disrupted: bool = False
    deleting: bool = False
    finished: bool = False
    succeeded: bool = False

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> JobView:
        meta = body.get("metadata") or {}
        deadline = False
        finished = False
        disrupted = False
        succeeded = False
        message = ""
        for cond in (body.get("status") or {}).get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") in ("Failed", "FailureTarget"):
                finished = True
                message = cond.get("message") or ""
                deadline = deadline or cond.get("reason") == "DeadlineExceeded"
                disrupted = disrupted or (
                    cond.get("reason") == "PodFailurePolicy" and "DisruptionTarget" in message
                )
            if cond.get("type") in ("Complete", "SuccessCriteriaMet"):
                finished = succeeded = True
        return cls(
            name=meta.get("name", "?"),
            created_ms=parse_time_ms(meta.get("creationTimestamp")) or 0,
            deadline_exceeded=deadline,
            failed_message=message,
            disrupted=disrupted,
            deleting=meta.get("deletionTimestamp") is not None,
            finished=finished,
            succeeded=succeeded,
        )


@dataclass(frozen=True)
class Clocks:
    """The clocks for one job (design: "Clocks per job type"), in seconds."""

    job_type: str
    run_timeout: int
    pending_timeout: int
    heartbeat_stale: int
    progress_stalled: int


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


@dataclass
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
) -> Decision:
    """What to do about one processing row, given its Job and newest pod."""
    if job is None:
        if job_was_created:
            return Retry(
                "its Kubernetes Job disappeared before it finished (deleted by someone else?)",
                kind="lost",
            )
        if now_ms - claimed_ms > clocks.pending_timeout * 1000:
            return Retry(
                "no Kubernetes Job could be created within "
                f"{human_duration(clocks.pending_timeout)}",
                kind="lost",
            )
        return CreateJob()

    if pod is not None and pod.finished:
        return _finished(job, pod, clocks)
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

    if pod.phase == "Pending":
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

    # Running
    started = pod.started_ms or pod.created_ms
    if memory.first_seen_running_ms is None:
        memory.first_seen_running_ms = now_ms
    if pod.progress is not None and pod.progress != memory.last_progress:
        memory.last_progress = pod.progress
        memory.last_progress_change_ms = now_ms
    last_beat = max(pod.heartbeat_ms or 0, started, memory.first_seen_running_ms)
    if now_ms - last_beat > clocks.heartbeat_stale * 1000:
        return Kill(
            Retry(
                f"the runner sent no heartbeat for {human_duration((now_ms - last_beat) / 1000)}"
                f" (limit {human_duration(clocks.heartbeat_stale)}); its pod was deleted"
            )
        )
    since_progress = memory.last_progress_change_ms or memory.first_seen_running_ms
    if now_ms - since_progress > clocks.progress_stalled * 1000:
        at = f"{memory.last_progress}%" if memory.last_progress is not None else "the start"
        return Kill(
            Retry(
                f"progress stalled at {at} for {human_duration(clocks.progress_stalled)}; "
                "its pod was deleted"
            )
        )
    return Running(stage=pod.stage, progress=pod.progress)


def _finished(job: JobView, pod: PodView, clocks: Clocks) -> Decision:
    message = parse_termination_message(pod.term_message)
    if pod.phase == "Succeeded":
        if isinstance(message, SuccessMessage):
            return Complete(message.result)
        if isinstance(message, FailureMessage):
            return _failure_from_message(message)
        return Complete({})
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
