"""What the controller keeps of a Job or a pod: only the fields the lifecycle rules read.

Built from a body as the watches (controller.watch) and the API's lists deliver it (plain
dicts); the engine's index holds these, never whole bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runner import contract as c


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


@dataclass(frozen=True)
class PodView:
    name: str
    phase: str
    created_ms: int
    job_name: str | None = None
    """The Job that owns the pod (its `job-name` label)."""
    job_id: str | None = None
    """The row's exact id (the `audiojob.dev/job-id` annotation)."""
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
        labels = meta.get("labels") or {}
        return cls(
            name=meta.get("name", "?"),
            phase=status.get("phase") or "Pending",
            created_ms=parse_time_ms(meta.get("creationTimestamp")) or 0,
            job_name=labels.get("batch.kubernetes.io/job-name") or labels.get("job-name"),
            job_id=ann.get(c.ANN_JOB_ID),
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
    job_id: str | None = None
    """The row's exact id (the `audiojob.dev/job-id` annotation)."""
    uid: str | None = None
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
            job_id=(meta.get("annotations") or {}).get(c.ANN_JOB_ID),
            uid=meta.get("uid"),
            deadline_exceeded=deadline,
            failed_message=message,
            disrupted=disrupted,
            deleting=meta.get("deletionTimestamp") is not None,
            finished=finished,
            succeeded=succeeded,
        )
