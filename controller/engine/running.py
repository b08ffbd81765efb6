"""Step 3 of the engine's cycle: decide about the running attempts (controller.lifecycle) and
act on each decision: create a missing Job, delete a stuck pod, owe an outcome.

A cycle runs on every burst of watch events; deciding about every attempt in each one cost most
of the controller's CPU with 1,000 in flight (bench/README.md, "Profile"). What `decide` reads
changes only by a watch event on the attempt's Job or pods, a relist, or the clock; so an
attempt is decided again when its Job or pods changed, and all are, for their clocks, every
heartbeat interval (or poll interval, if longer). The clocks run in minutes (the shortest
default, heartbeat-stale, is 60 s), and the heartbeat statement of every running row goes out
that often anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from controller.engine.attempts import Attempt, Attempts
from controller.engine.outcomes import Outcomes
from controller.engine.view import View
from controller.kube import Kube
from controller.lifecycle import (
    Clocks,
    Complete,
    CreateJob,
    Fail,
    Kill,
    Retry,
    Running,
    after_kill,
    clocks_for,
    decide,
    settle,
)
from controller.settings import Settings
from controller.store import Beat

log = logging.getLogger("audiojob.engine")


class RunningAttempts:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        view: View,
        attempts: Attempts,
        outcomes: Outcomes,
        grace: int,
        owe: Callable[[Attempt, Complete | Fail | Retry], None],
        create_job: Callable[[Attempt], Awaitable[None]],
    ) -> None:
        """`owe` and `create_job` are the engine's: they also note capacity came free."""
        self._settings = settings
        self._kube = kube
        self._view = view
        self._attempts = attempts
        self._outcomes = outcomes
        self._grace = grace
        self._owe = owe
        self._create_job = create_job
        self._last_full_look = float("-inf")
        self._decided_generation = -1
        self._clocks_of: dict[str, Clocks] = {}

    def owe(self, a: Attempt, outcome: Complete | Fail | Retry) -> None:
        """The attempt ended: it is no longer running, and its outcome is owed to the row."""
        pods = self._view.pods_of(a.name)
        self._attempts.pop(a.job_id)
        self._outcomes.owe(a, outcome, pods[-1] if pods else None)

    def _touched(self) -> set[str] | None:
        """The Job names to decide about this cycle, or None for every attempt."""
        touched = self._view.take_touched()
        claim = self._settings.claim
        every = max(claim.poll_interval_seconds, claim.heartbeat_interval_seconds)
        if (
            touched is None
            or self._view.generation != self._decided_generation
            or time.monotonic() - self._last_full_look >= every
        ):
            self._decided_generation = self._view.generation
            self._last_full_look = time.monotonic()
            return None
        return touched

    async def decide_all(self, now: int) -> None:
        touched = self._touched()
        attempts = self._attempts
        for a in list(attempts) if touched is None else attempts.to_decide(touched):
            if attempts.get(a.job_id) is not a:
                continue  # ended earlier in this cycle
            attempts.set_beat(a, None)
            if (beat := await self._decide(a, now)) is not None and attempts.get(a.job_id) is a:
                attempts.set_beat(a, beat)  # stands until its Job or pods change
        await attempts.record()
        if len(self._outcomes):
            await self._outcomes.flush()

    async def _decide(self, a: Attempt, now: int) -> Beat | None:
        """Decide and act; the attempt's standing heartbeat, or None to decide it again."""
        job = self._view.job(a.name)
        a.job_seen = a.job_seen or job is not None
        pods = self._view.pods_of(a.name)
        pod = pods[-1] if pods else None
        if a.kill_then is not None:
            if (then := after_kill(a.kill_then, pods)) is not None:
                self._owe(a, then)
                return None
            return Beat(a.job_id, a.attempt)
        decision, a.memory = decide(
            job=job,
            pod=pod,
            clocks=self._clocks(a.job_type),
            claimed_ms=a.claimed_ms,
            now_ms=now,
            memory=a.memory,
            job_was_created=a.job_created,
            view_after_create=a.job_seen or self._view.covers(a.created_mono),
        )
        decision = settle(decision, pods)
        if pod and not a.recorded_start and pod.phase != "Pending":
            self._attempts.started(a, pod, now)
        if isinstance(decision, CreateJob):
            await self._create_job(a)
            return None  # decided again next cycle, with the Job created
        if isinstance(decision, Complete | Fail | Retry):
            self._owe(a, decision)
            return None
        if isinstance(decision, Running):
            return Beat(a.job_id, a.attempt, decision.stage, decision.progress)
        if isinstance(decision, Kill):
            log.info("deleting pod: %s", decision.then.error, extra=a.fields())
            a.kill_then = decision.then
            await self._kube.delete_job(a.name, self._grace)
        return Beat(a.job_id, a.attempt)

    def _clocks(self, job_type: str) -> Clocks:
        # Settings do not change while we run; building Clocks per attempt per cycle did cost.
        if (clocks := self._clocks_of.get(job_type)) is None:
            clocks = self._clocks_of[job_type] = clocks_for(self._settings.timeouts, job_type)
        return clocks
