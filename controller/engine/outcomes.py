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
        """Write every owed outcome (one fenced statement each), then the attempts ledger in
        one statement, then Events and TTLs in parallel."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        recorded: list[tuple[Attempt, str, str, bool]] = []
        try:
            for job_id, owed in list(self._owed.items()):
                label, res = await self._write(owed)
                del self._owed[job_id]
                a, o = owed.attempt, owed.outcome
                m.OUTCOMES.labels(outcome=label if res != "stale" else "stale").inc()
                self._ends.append(Ended(a.job_id, a.attempt, owed.exit_code, owed.reason, now_ms()))
                text = getattr(o, "error", "completed")
                log.info("recorded %s: %s", label, text, extra=a.fields(write=res))
                recorded.append((a, label if res != "stale" else "", text, isinstance(o, Complete)))
        finally:
            await self._kube_after(recorded)
        if self._ends:
            try:
                await self._batches.attempts_ended(self._ends)
                self._ends.clear()
            except StoreError as e:  # history, not state: written with the next flush
                log.warning("could not record the end of %d attempts yet: %s", len(self._ends), e)

    async def _write(self, owed: Owed) -> tuple[str, str]:
        a, o = owed.attempt, owed.outcome
        if isinstance(o, Complete):
            return "complete", await self._store.complete(a.job_id, a.attempt, o.result)
        if isinstance(o, Fail):
            return o.kind, await self._store.fail(a.job_id, a.attempt, error=o.error, kind=o.kind)
        res = await self._store.retry_or_fail(
            a.job_id,
            a.attempt,
            error=o.error,
            kind=o.kind,
            backoff_seconds=self._settings.timeouts.retry_backoff_seconds,
        )
        return ("retried" if res == "requeued" else o.kind), res

    async def _kube_after(self, recorded: list[tuple[Attempt, str, str, bool]]) -> None:
        ttl = self._settings.runner.ttl_seconds_after_finished

        async def one(a: Attempt, label: str, text: str, ok: bool) -> None:
            if label:
                await self.event(a, label, text, warning=not ok)
            # Only now may Kubernetes collect the finished Job.
            await self._kube.set_job_ttl(a.name, ttl)

        await all_of((one(*r) for r in recorded), limit=self._settings.kube.write_concurrency)

    async def event(self, a: Attempt, reason: str, message: str, *, warning: bool) -> None:
        job = self._view.job(a.name)
        uid = job.uid if job else None
        try:
            await self._kube.event(a.name, uid, reason.capitalize(), message, warning=warning)
        except KubeError as e:
            log.debug("could not post event: %s", e)
