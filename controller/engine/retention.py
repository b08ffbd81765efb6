"""The leader's pruning of finished rows past retention (settings.retention), beside the cycle.

The cycle only pokes it, and a poke starts a run at most every `interval_seconds`; the deleting
runs as a task of its own, one small batch per transaction, so a cycle never waits for it and
claims are never held up by more than one batch's write. A run that meets a database outage is given
up and tried again at the next interval; losing the lead or stopping cancels it between
batches (each batch is one transaction: it went or it did not).
"""

from __future__ import annotations

import asyncio
import logging
import time

from controller.settings import RetentionSettings
from controller.store import JobStore, StoreError, now_ms
from controller.store.retention import Retention

log = logging.getLogger("audiojob.retention")

DAY_MS = 24 * 60 * 60 * 1000


class Pruner:
    def __init__(self, *, settings: RetentionSettings, store: JobStore, table: str) -> None:
        self._settings = settings
        self._retention = Retention(store, table)
        self._task: asyncio.Task[int] | None = None
        self._last_start = float("-inf")
        self.batches = 0
        """Batches deleted since start (tests watch it)."""

    @property
    def enabled(self) -> bool:
        return self._settings.finished_days is not None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def poke(self) -> asyncio.Task[int] | None:
        """From the leader's cycle: start a run if retention is on, one is due and none runs;
        the run's task, if one started."""
        if not self.enabled or self.running:
            return None
        if time.monotonic() - self._last_start < self._settings.interval_seconds:
            return None
        self._last_start = time.monotonic()
        self._task = asyncio.create_task(self.run(), name="audiojob-retention")
        return self._task

    async def run(self, *, now: int | None = None) -> int:
        """Delete batches until none is left; the rows deleted. Never raises StoreError."""
        days = self._settings.finished_days
        if days is None:
            return 0
        cutoff = (now_ms() if now is None else now) - round(days * DAY_MS)
        limit = self._settings.batch_rows
        total = 0
        try:
            while True:
                gone = await self._retention.prune(finished_before_ms=cutoff, limit=limit)
                total += gone
                self.batches += 1
                if gone < limit:
                    break
                # Between batches, let the cycle's statements go first (file: one store thread).
                await asyncio.sleep(0)
        except StoreError as e:
            log.warning(
                "pruning finished rows stopped after %d rows; trying again in %.0f s: %s",
                total,
                self._settings.interval_seconds,
                e,
            )
            return total
        if total:
            log.info("deleted %d finished rows older than %g days and their attempts", total, days)
        return total

    def cancel(self) -> None:
        """Stop a run in progress (lost the lead, or shutting down); a batch in flight either
        committed or did not."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
