"""Outcomes decided but not yet in the database: kept while it is away, written when it is back.

Only once an outcome is in the row does its Job get `ttlSecondsAfterFinished`; until then the
finished Job is where the next controller would read the outcome again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from controller import metrics as m
from controller.engine.attempts import Attempt, all_of
from controller.engine.view import View
from controller.kube import Kube, KubeError
from controller.lifecycle import Complete, Fail, Retry
from controller.settings import Settings
from controller.snapshots import PodView
from controller.store import JobStore, StoreError, now_ms
from controller.store.batches import Batches, Ended
from controller.store.outcome_writes import Completion, Failure, Requeue
from controller.store.rows import chunks

log = logging.getLogger("audiojob.engine")


@dataclass
class Owed:
    """An outcome decided but not yet written to the row."""

    attempt: Attempt
    outcome: Complete | Fail | Retry
    exit_code: int | None = None
    reason: str | None = None
    started_ms: int = 0
    """When its pod started (else when it was claimed): the run duration's start."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """An outcome whose write was answered, and what Kubernetes is told about it."""

    attempt: Attempt
    event: str
    """The Event's reason; empty when the row had moved on (nothing of ours to announce) and
    for a completion, which the Job controller's own `Completed` Event on the Job already
    announces: a second one cost an API write per job, a third of the controller's writes."""
    text: str
    ok: bool


class Outcomes:
    def __init__(self, *, settings: Settings, store: JobStore, kube: Kube, view: View) -> None:
        self._settings = settings
        self._store = store
        self._batches = Batches(store, settings.db.table)
        self._kube = kube
        self._view = view
        self._owed: dict[str, Owed] = {}
        self._ends: list[Ended] = []
        # Shutdown flushes while a cycle may be flushing: one writer at a time.
        self._flushing = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._owed)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._owed

    def owe(self, a: Attempt, outcome: Complete | Fail | Retry, pod: PodView | None) -> None:
        self._owed[a.job_id] = Owed(
            a,
            outcome,
            exit_code=pod.exit_code if pod else None,
            reason=(pod.term_reason if pod else None) or type(outcome).__name__.lower(),
            started_ms=(pod.started_ms if pod else None) or a.claimed_ms,
        )

    async def flush(self) -> None:
        """Write every owed outcome (one statement per kind), then the attempts ledger in one
        statement, then Events and TTLs in parallel."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        owed = list(self._owed.values())
        done = [(o, o.outcome) for o in owed if isinstance(o.outcome, Complete)]
        failed = [(o, o.outcome) for o in owed if isinstance(o.outcome, Fail)]
        retried = [(o, o.outcome) for o in owed if isinstance(o.outcome, Retry)]
        recorded: list[Recorded] = []
        # Slices of one statement each, answered as soon as they land: if the database goes
        # away halfway, what did land is followed up (TTL, Event) and the rest stays owed.
        try:
            for dones in chunks(done):
                written = await self._store.complete_many(
                    [Completion(o.attempt.job_id, o.attempt.attempt, c.result) for o, c in dones]
                )
                for o, _ in dones:
                    recorded.append(self._recorded(o, "complete", written[o.attempt.job_id]))
            for fails in chunks(failed):
                answered = await self._store.fail_many(
                    [
                        Failure(o.attempt.job_id, o.attempt.attempt, f.error, f.kind)
                        for o, f in fails
                    ]
                )
                for o, f in fails:
                    recorded.append(self._recorded(o, f.kind, answered[o.attempt.job_id]))
            backoff = self._settings.timeouts.retry_backoff_seconds
            for retries in chunks(retried):
                settled = await self._store.retry_many(
                    [
                        Requeue(o.attempt.job_id, o.attempt.attempt, r.error, r.kind, backoff)
                        for o, r in retries
                    ]
                )
                for o, r in retries:
                    res = settled[o.attempt.job_id]
                    label = "retried" if res == "requeued" else r.kind
                    recorded.append(self._recorded(o, label, res))
        finally:
            await self._kube_after(recorded)
        if self._ends:
            try:
                await self._batches.attempts_ended(self._ends)
                self._ends.clear()
            except StoreError as e:  # history, not state: written with the next flush
                log.warning("could not record the end of %d attempts yet: %s", len(self._ends), e)

    def _recorded(self, owed: Owed, label: str, res: str) -> Recorded:
        """The outcome's write has an answer (`stale`: the row had moved on): it is owed no
        more; count, log and keep what Kubernetes is told next."""
        a, o = owed.attempt, owed.outcome
        if self._owed.get(a.job_id) is owed:
            del self._owed[a.job_id]
        ended = now_ms()
        m.run_ended(
            job_type=a.job_type,
            outcome=_metric_outcome(o, res),
            kind=getattr(o, "kind", None),
            started_ms=owed.started_ms,
            now_ms=ended,
        )
        self._ends.append(Ended(a.job_id, a.attempt, owed.exit_code, owed.reason, ended))
        text = getattr(o, "error", "completed")
        log.info("recorded %s: %s", label, text, extra=a.fields(write=res))
        ok = isinstance(o, Complete)
        return Recorded(a, label if res != "stale" and not ok else "", text, ok)

    async def _kube_after(self, recorded: list[Recorded]) -> None:
        if not recorded:  # most cycles: nothing to post, so no workers to start
            return
        ttl = self._settings.runner.ttl_seconds_after_finished

        async def one(r: Recorded) -> None:
            if r.event:
                await self.event(r.attempt, r.event, r.text, warning=not r.ok)
            # Only now may Kubernetes collect the finished Job.
            await self._kube.set_job_ttl(r.attempt.name, ttl)

        await all_of((one(r) for r in recorded), limit=self._settings.kube.write_concurrency)

    async def event(self, a: Attempt, reason: str, message: str, *, warning: bool) -> None:
        job = self._view.job(a.name)
        uid = job.uid if job else None
        try:
            await self._kube.event(a.name, uid, reason.capitalize(), message, warning=warning)
        except KubeError as e:
            log.debug("could not post event: %s", e)


def _metric_outcome(outcome: Complete | Fail | Retry, res: str) -> str:
    """audiojob_outcomes_total's outcome: what the write did to the row."""
    if res == "stale":
        return "stale"
    if isinstance(outcome, Complete):
        return "complete"
    return "retried" if res == "requeued" else "failed"
