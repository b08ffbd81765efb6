"""Outcomes decided but not yet in the database: kept while it is away, written when it is back.

Only once an outcome is in the row does its Job get `ttlSecondsAfterFinished`; until then the
finished Job is where the next controller would read the outcome again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from controller import metrics as m
from controller.engine.attempts import Attempt
from controller.engine.view import View
from controller.kube import Kube, KubeError
from controller.lifecycle import Complete, Fail, Retry
from controller.settings import Settings
from controller.snapshots import PodView
from controller.store import JobStore, now_ms

log = logging.getLogger("audiojob.engine")


@dataclass
class Owed:
    """An outcome decided but not yet written to the row."""

    attempt: Attempt
    outcome: Complete | Fail | Retry
    exit_code: int | None = None
    reason: str | None = None


class Outcomes:
    def __init__(self, *, settings: Settings, store: JobStore, kube: Kube, view: View) -> None:
        self._settings = settings
        self._store = store
        self._kube = kube
        self._view = view
        self._owed: dict[str, Owed] = {}

    def __len__(self) -> int:
        return len(self._owed)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._owed

    def clear(self) -> None:
        self._owed.clear()

    def owe(self, a: Attempt, outcome: Complete | Fail | Retry, pod: PodView | None) -> None:
        self._owed[a.job_id] = Owed(
            a,
            outcome,
            exit_code=pod.exit_code if pod else None,
            reason=(pod.term_reason if pod else None) or type(outcome).__name__.lower(),
        )

    async def flush(self) -> None:
        for job_id, owed in list(self._owed.items()):
            a = owed.attempt
            o = owed.outcome
            res: str
            if isinstance(o, Complete):
                res = await self._store.complete(a.job_id, a.attempt, o.result)
                label = "complete"
            elif isinstance(o, Fail):
                res = await self._store.fail(a.job_id, a.attempt, error=o.error, kind=o.kind)
                label = o.kind
            else:
                res = await self._store.retry_or_fail(
                    a.job_id,
                    a.attempt,
                    error=o.error,
                    kind=o.kind,
                    backoff_seconds=self._settings.timeouts.retry_backoff_seconds,
                )
                label = "retried" if res == "requeued" else f"{o.kind}"
            del self._owed[job_id]
            m.OUTCOMES.labels(outcome=label if res != "stale" else "stale").inc()
            await self._store.attempt_ended(
                a.job_id, a.attempt, exit_code=owed.exit_code, reason=owed.reason, ended_ms=now_ms()
            )
            text = getattr(o, "error", "completed")
            log.info("recorded %s: %s", label, text, extra=a.fields(write=res))
            if res != "stale":
                await self.event(a, label, text, warning=not isinstance(o, Complete))
            # Only now may Kubernetes collect the finished Job.
            await self._kube.set_job_ttl(a.name, self._settings.runner.ttl_seconds_after_finished)

    async def event(self, a: Attempt, reason: str, message: str, *, warning: bool) -> None:
        job = self._view.job(a.name)
        uid = job.uid if job else None
        try:
            await self._kube.event(a.name, uid, reason.capitalize(), message, warning=warning)
        except KubeError as e:
            log.debug("could not post event: %s", e)
