"""The engine: one loop per controller that keeps job rows and Kubernetes Jobs consistent.

It acts only while it leads its installation (engine.leader); a standby waits, not ready.
Each cycle (every poll interval, or at once when a watch event arrives):
  1. at start and every reconcile interval: adopt this installation's processing rows, relist
     the namespace's managed Jobs and pods (between relists, controller.watch keeps the view
     current; a watch that lost its place asks for a relist in the next cycle), delete Jobs
     whose rows are done; then, and every takeover interval, take over rows of dead
     installations (one statement when there is nothing to take);
  2. write outcomes still owed to the database (kept in memory while it is away);
  3. decide about the running attempts whose Job or pods changed, and about all of them
     every heartbeat interval (engine.running, controller.lifecycle), and act: create a
     missing Job, delete a stuck pod, owe an outcome;
  4. one heartbeat statement for every running row; rows it no longer finds `processing`
     were cancelled (or taken over): delete their Job with the grace period;
  5. look for rows the app cancelled (every cancel check interval while attempts run) and
     finalize cancelled rows whose pods are confirmed gone (engine.cancels);
  6. renew the installation's lease on its rows (the workers table), then claim up to the
     free capacity and create one Job per row, the next batch claimed while this one's Jobs
     are created (engine.intake); capacity freed claims at once only while rows wait;
  7. with retention on, every retention interval: start pruning finished rows past it, in a
     task of its own (engine.retention), so no cycle waits for it.
Every write is safe to repeat: deterministic Job names, fenced conditional UPDATEs. The state
lives in small owners (engine.view, .attempts, .running, .outcomes, .cancels, .claims); this
module only orders them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from controller import metrics as m
from controller.engine.attempts import Attempt, Attempts, all_of
from controller.engine.cancels import Cancellations
from controller.engine.claims import Claims
from controller.engine.intake import claim_and_create
from controller.engine.leader import Leader
from controller.engine.outcomes import Outcomes
from controller.engine.retention import Pruner
from controller.engine.running import RunningAttempts
from controller.engine.view import View
from controller.kube import Kube, KubeError
from controller.lifecycle import (
    Complete,
    Fail,
    Retry,
)
from controller.settings import Settings
from controller.store import Beat, JobStore, StoreError, now_ms

log = logging.getLogger("audiojob.engine")
CLAIM_BATCH_PER_WRITER = 4
"""A claim takes at most this many rows per concurrent Job write (64 at the default 16): a row
claimed waits for the Jobs claimed before it, so 1,000 claimed at once waited up to the whole
batch's creation time (claim -> Job p95 24 s on main before issue 21; bench/README.md). Four
rounds of creates per claim keep the claim's own round trip to a hosted database (50 ms) small
beside them, and a claim of 200 rows still takes four statements, not one per row."""
SHUTDOWN_FLUSH_SECONDS = 10.0
MIN_CYCLE_GAP_SECONDS = 0.1
"""A burst of watch events (a claim batch's Jobs and pods starting) is handled in one cycle,
not one cycle per event: each cycle decides about every running attempt."""


class Engine:
    def __init__(self, *, settings: Settings, store: JobStore, kube: Kube) -> None:
        self.settings = settings
        self.store = store
        self.kube = kube
        self.installation = settings.installation_id
        grace = settings.timeouts.cancel_grace_seconds
        self.grace = grace
        self.view = View()
        self.attempts = Attempts(settings=settings, store=store, kube=kube)
        self.outcomes = Outcomes(settings=settings, store=store, kube=kube, view=self.view)
        self.cancels = Cancellations(
            owner=self.installation,
            store=store,
            kube=kube,
            view=self.view,
            grace=grace,
            attempts=self.attempts,
            outcomes=self.outcomes,
            check_seconds=settings.claim.cancel_check_interval_seconds,
        )
        self.running = RunningAttempts(
            settings=settings,
            kube=kube,
            view=self.view,
            attempts=self.attempts,
            outcomes=self.outcomes,
            grace=grace,
            owe=self._owe,
            create_job=self._create_job,
        )
        self.claims = Claims(
            owner=self.installation,
            settings=settings,
            store=store,
            kube=kube,
            view=self.view,
            attempts=self.attempts,
            outcomes=self.outcomes,
            grace=grace,
        )
        self.leader = Leader(
            kube=kube,
            settings=settings.ownership,
            installation=self.installation,
            holder=f"{socket.gethostname()}-{os.getpid()}",
            on_change=self._leadership,
        )
        self.pruner = Pruner(settings=settings.retention, store=store, table=settings.db.table)
        self.wake = asyncio.Event()
        self.stopping = False
        self.ready = False
        self.last_cycle_ms = 0
        self.turned_mono = time.monotonic()
        """When the loop last came round (a cycle done or failed, or a standby's wait):
        controller.health judges a stuck loop by it."""
        self._wait = settings.claim.poll_interval_seconds
        self._adopted = False
        self._last_reconcile = 0.0
        self._last_takeover = float("-inf")
        self._last_worker_beat = float("-inf")
        self._last_heartbeat = 0.0
        self._last_claim = float("-inf")
        self._freed = True
        """Capacity came free since the last claim: claim before the poll interval is up..."""
        self._backlog = True
        """...if the last claim left rows behind (it was full). A freed slot with the table
        drained waits for the poll: each claim is a statement, and one per finished attempt
        found nothing (bench/README.md, statements per job)."""
        self._leader_task: asyncio.Task[None] | None = None
        # Read at scrape time, so they are right between cycles and while a cycle is stuck.
        m.LEADER.set_function(lambda: 1 if self.leader.acting() else 0)
        m.RUNNING.set_function(lambda: len(self.attempts))
        m.OWED.set_function(lambda: len(self.outcomes))
        m.OLDEST_WAITING.set_function(self.attempts.oldest_waiting_seconds)

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        self._leader_task = asyncio.create_task(self.leader.run(), name="audiojob-leader")
        try:
            await self._run()
        finally:
            self._leader_task.cancel()

    async def _run(self) -> None:
        backoff = 1.0
        while not self.stopping:
            if not self.leader.acting():
                self.ready = False
                self.wake.clear()
                self._turned(self.settings.ownership.retry_period_seconds)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self._wait)
                continue
            try:
                await self.cycle()
                backoff = 1.0
                self.ready = True
                # Shorter while attempts run: the look for cancelled rows (engine.cancels).
                delay = self.cancels.interval(self.settings.claim.poll_interval_seconds)
            except (StoreError, KubeError) as e:
                # An outage: keep what we owe, back off, catch up when it is back.
                m.CYCLE_ERRORS.labels(
                    cause="database" if isinstance(e, StoreError) else "kubernetes"
                ).inc()
                log.warning("cycle interrupted, retrying in %.0f s: %s", backoff, e)
                delay, backoff = backoff, min(backoff * 2, 30.0)
            except Exception:
                log.exception("unexpected error in the engine cycle")
                m.CYCLE_ERRORS.labels(cause="unexpected").inc()
                delay = self.settings.claim.poll_interval_seconds
            self._turned(delay)
            await asyncio.sleep(MIN_CYCLE_GAP_SECONDS)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delay)

    def _turned(self, wait: float) -> None:
        self.turned_mono = time.monotonic()
        self._wait = wait

    def interval(self) -> float:
        """How long the loop may take to come round: the poll interval, or the current wait
        when it is longer (an outage's backoff)."""
        return max(self.settings.claim.poll_interval_seconds, self._wait)

    def observe(self, kind: str, event: str, body: dict[str, Any]) -> None:
        """A watch event about a managed Job or pod (controller.watch): index it, act now."""
        self.view.apply(kind, event, body)
        self.wake.set()

    def relist_soon(self) -> None:
        """A watch lost its place (controller.watch): relist in the next cycle."""
        self.view.want_list = True
        self.wake.set()

    def _leadership(self, leading: bool) -> None:
        # Whatever we knew may be out of date when we lead again: re-adopt from the rows then.
        # Owed outcomes stay; their writes are fenced by attempt.
        self.attempts.clear()
        self.cancels.clear()
        self.pruner.cancel()
        self._adopted = False
        self._freed = self._backlog = True
        self._last_worker_beat = float("-inf")
        self.ready = False
        self.wake.set()

    async def shutdown(self) -> None:
        """Stop claiming, flush what we owe (once), leave running Jobs to the next controller,
        and hand the Lease over."""
        self.stopping = True
        self.wake.set()
        self.pruner.cancel()
        try:
            # Bounded: with the database away, exiting beats hanging; the outcomes are still
            # in the finished Jobs (no TTL yet) for the next controller to record.
            await asyncio.wait_for(self.outcomes.flush(), timeout=SHUTDOWN_FLUSH_SECONDS)
        except (StoreError, KubeError, TimeoutError) as e:
            log.warning(
                "could not write every outcome before exit (the next controller will "
                "re-derive them from the Jobs): %s",
                e,
            )
        if self._leader_task is not None:
            # A renewal racing the release would take the Lease back for a process that is
            # about to exit, and a standby would wait the whole lease duration.
            self._leader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leader_task
        await self.leader.release()

    async def cycle(self) -> None:
        m.CYCLES.inc()
        now = now_ms()
        reconcile = not self._adopted or self._due(
            self._last_reconcile, "reconcile_interval_seconds"
        )
        if reconcile:
            await self._reconcile()
        elif self.view.want_list:
            await self._relist()
        takeover = self.settings.ownership.takeover_interval_seconds
        if not self.stopping and (reconcile or time.monotonic() - self._last_takeover >= takeover):
            # Each reconcile also looks past the gate, for rows whose owner has no worker row.
            await self._take_over(gated=not reconcile)
        await self.outcomes.flush()
        await self.running.decide_all(now)
        if self._due(self._last_heartbeat, "heartbeat_interval_seconds") or not self.attempts:
            await self._heartbeat(self.attempts.beats())
        if self.cancels.due(self.settings.claim.poll_interval_seconds):
            for job_id in await self.cancels.finish():
                self.attempts.pop(job_id)
                self._freed = True
        if self._due(self._last_worker_beat, "worker_heartbeat_seconds"):
            # Before claiming: an installation that cannot renew its lease must not claim.
            first = self._last_worker_beat == float("-inf")
            await self.claims.beat(len(self.attempts), start=first)
            self._last_worker_beat = time.monotonic()
        if not self.stopping and self.claim_due():
            await self._claim()
        if not self.stopping:
            self.pruner.poke()  # its own task: deleting history never holds up this cycle
        self.last_cycle_ms = now_ms()
        m.LAST_CYCLE.set(self.last_cycle_ms / 1000)

    def _due(self, last: float, setting: str) -> bool:
        interval: float = getattr(self.settings.claim, setting)
        return time.monotonic() - last >= interval

    # -- 1. what exists ---------------------------------------------------------------------
    async def _relist(self) -> None:
        await self.view.relist(self.kube)

    async def _reconcile(self) -> None:
        # Rows first, then the list: a Job an adopted row names was created before the list
        # was sent, so the list can tell whether it is gone (engine.attempts, created_mono).
        await self.claims.adopt()
        await self._relist()
        known = {a.job_id for a in self.attempts} | {
            jid for jid in self.view.job_ids() if jid in self.outcomes or jid in self.cancels
        }
        await self.claims.delete_orphans(known)
        self._adopted = True
        self._last_reconcile = time.monotonic()

    async def _take_over(self, *, gated: bool) -> None:
        self._last_takeover = time.monotonic()
        taken = await self.claims.take_over(self._free(), gated=gated)
        await all_of(
            (self._create_job(a) for a in taken), limit=self.settings.kube.write_concurrency
        )

    # -- 3. running attempts: engine.running ------------------------------------------------
    def _owe(self, a: Attempt, outcome: Complete | Fail | Retry) -> None:
        self._freed = True
        self.running.owe(a, outcome)

    async def _create_job(self, a: Attempt) -> None:
        refused = await self.attempts.create_job(a)
        if refused is not None:
            self._owe(a, refused)

    # -- 4. heartbeat + cancellation detection ----------------------------------------------
    async def _heartbeat(self, beats: list[Beat]) -> None:
        self._last_heartbeat = time.monotonic()
        if not beats:
            return
        gone = await self.store.heartbeat(beats)
        if not gone:
            return
        left = [a for a in self.attempts if a.job_id in gone]
        for a in left:
            self.attempts.pop(a.job_id)
        self._freed = True
        await self.cancels.left_us(left)

    # -- 6. claim ---------------------------------------------------------------------------
    def _free(self) -> int:
        return (
            self.settings.claim.max_concurrent
            - len(self.attempts)
            - len(self.cancels)
            - len(self.outcomes)
        )

    def claim_due(self) -> bool:
        """Claim in this cycle: capacity came free while rows wait, or the poll is due."""
        return (self._freed and self._backlog) or self._due(
            self._last_claim, "poll_interval_seconds"
        )

    async def _claim(self) -> None:
        """Claim up to the free capacity, in batches of CLAIM_BATCH_PER_WRITER times the write
        concurrency, the next batch claimed while this one's last Jobs are created
        (engine.intake); the Job names of all of them in one statement at the end."""
        self._last_claim = time.monotonic()
        self._freed = False
        writers = self.settings.kube.write_concurrency

        async def batch() -> tuple[list[Attempt], bool]:
            free = min(self._free(), CLAIM_BATCH_PER_WRITER * writers)
            if not self.leader.acting() or self.stopping or free <= 0:
                return [], False  # (whether rows wait is not known: _backlog stays)
            new, self._backlog = await self.claims.claim(free)
            return new, self._backlog

        try:
            await claim_and_create(batch, self._create_job, limit=writers)
        finally:
            await self.attempts.record()

    def health(self) -> dict[str, Any]:
        return {
            "installation": self.installation,
            "leader": self.leader.acting(),
            "running": len(self.attempts),
            "owed": len(self.outcomes),
            "cancelling": len(self.cancels),
            "last_cycle_ms": self.last_cycle_ms,
            "ready": self.ready,
        }
