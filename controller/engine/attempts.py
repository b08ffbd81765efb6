"""The attempts this controller runs, and the writes that start them: create the Job, record
its name and its pod's start in the database."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from controller import metrics as m
from controller.builders import build_job
from controller.kube import Kube, KubeError
from controller.lifecycle import Fail, Progress, Retry
from controller.logs import job_fields
from controller.names import job_name
from controller.settings import Settings
from controller.snapshots import PodView
from controller.store import Beat, JobRow, JobStore, StoreError, now_ms
from controller.store.batches import Batches, Started

log = logging.getLogger("audiojob.engine")


async def all_of(calls: Iterable[Awaitable[object]], *, limit: int = 16) -> None:
    """Run calls with at most `limit` in flight and, once all have ended, raise the first
    failure: one failed call must not strand the others half-done. `calls` is consumed
    lazily, so a generator builds each request (a Job body) only when it is about to be sent."""
    pending = iter(calls)
    errors: list[BaseException] = []

    async def worker() -> None:
        for call in pending:
            try:
                await call
            except Exception as e:  # collected, raised after the others ended
                errors.append(e)

    await asyncio.gather(*(worker() for _ in range(limit)))
    if errors:
        raise errors[0]


@dataclass
class Attempt:
    """One running attempt this controller watches."""

    job_id: str
    attempt: int
    job_type: str
    trace_id: str
    payload: str
    claimed_ms: int
    job_created: bool
    created_mono: float = float("-inf")
    """`time.monotonic()` when this controller learned the Job exists (its create returned,
    or the row said so at adoption): a view listed before that cannot tell it is gone."""
    job_seen: bool = False
    """The view has shown this attempt's Job: its absence now means it is gone."""
    memory: Progress = field(default_factory=Progress)
    kill_then: Fail | Retry | None = None
    recorded_start: bool = False
    k8s_job_recorded: bool = True
    claimed_here: bool = False
    """Claimed by this process (not adopted): its claim-to-Running latency is ours to time."""
    beat: Beat | None = None
    """The heartbeat of its last decision, while nothing that decision read has changed
    (engine.loop decides again only then, or every poll interval)."""

    @classmethod
    def from_row(cls, row: JobRow, *, claimed_now: bool = False) -> Attempt:
        return cls(
            job_id=row.job_id,
            attempt=row.attempt,
            job_type=row.type,
            trace_id=row.trace_id or "",
            payload=row.payload,
            claimed_ms=now_ms() if claimed_now else (row.started_at or row.updated_at),
            job_created=row.k8s_job is not None and not claimed_now,
            created_mono=time.monotonic(),
            claimed_here=claimed_now,
        )

    @functools.cached_property
    def name(self) -> str:  # asked for every attempt in every cycle
        return job_name(self.job_id, self.attempt)

    def fields(self, **more: Any) -> dict[str, Any]:
        return job_fields(
            self.job_id, self.trace_id, attempt=self.attempt, k8s_job=self.name, **more
        )


class Attempts:
    """Running attempts by job id, and the writes that start one."""

    def __init__(self, *, settings: Settings, store: JobStore, kube: Kube) -> None:
        self._settings = settings
        self._store = store
        self._batches = Batches(store, settings.db.table)
        self._kube = kube
        self._running: dict[str, Attempt] = {}
        self._by_name: dict[str, Attempt] = {}
        self._undecided: set[str] = set()
        """Job ids whose attempt has no standing decision (`beat` None): new, or its last
        decision must be made again. With `_by_name`, a cycle visits only these and the
        attempts whose Job or pods changed, not every running attempt (engine.loop)."""
        self._unrecorded: dict[str, Attempt] = {}
        """Created Jobs whose names are not in the database yet (`record`)."""
        self._starts: list[tuple[Attempt, Started]] = []

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._running

    def __iter__(self) -> Iterator[Attempt]:
        return iter(list(self._running.values()))

    def oldest_waiting_seconds(self) -> float:
        """Since claim, of the oldest attempt whose pod has not been seen started; 0 if none."""
        claims = [a.claimed_ms for a in self._running.values() if not a.recorded_start]
        return max(0, now_ms() - min(claims)) / 1000 if claims else 0.0

    def add(self, a: Attempt) -> None:
        self.pop(a.job_id)
        self._running[a.job_id] = a
        self._by_name[a.name] = a
        self.set_beat(a, a.beat)
        if not a.k8s_job_recorded:
            self._unrecorded[a.job_id] = a

    def get(self, job_id: str) -> Attempt | None:
        return self._running.get(job_id)

    def pop(self, job_id: str) -> Attempt | None:
        a = self._running.pop(job_id, None)
        if a is not None:
            self._by_name.pop(a.name, None)
            self._undecided.discard(job_id)
            self._unrecorded.pop(job_id, None)
        return a

    def clear(self) -> None:
        self._running.clear()
        self._by_name.clear()
        self._undecided.clear()
        self._unrecorded.clear()
        self._starts.clear()

    def set_beat(self, a: Attempt, beat: Beat | None) -> None:
        """The attempt's standing decision as its heartbeat; None: decide it again."""
        a.beat = beat
        if beat is None:
            self._undecided.add(a.job_id)
        else:
            self._undecided.discard(a.job_id)

    def to_decide(self, touched: set[str]) -> list[Attempt]:
        """The attempts without a standing decision, then those whose Job or pods (by Job
        name) changed."""
        out = [self._running[j] for j in self._undecided]
        out += [
            a
            for name in touched
            if (a := self._by_name.get(name)) is not None and a.job_id not in self._undecided
        ]
        return out

    def beats(self) -> list[Beat]:
        """Every running attempt's heartbeat: its decision's, or a bare one."""
        return [a.beat or Beat(a.job_id, a.attempt) for a in self._running.values()]

    async def create_job(self, a: Attempt) -> Fail | None:
        """Create the attempt's Job (already there is success); a Fail when the API refuses it
        for good (invalid, forbidden, quota), which a person must act on."""
        body = build_job(
            job_id=a.job_id,
            job_type=a.job_type,
            attempt=a.attempt,
            trace_id=a.trace_id,
            payload_json=a.payload,
            settings=self._settings,
        )
        try:
            created = await self._kube.create_job(body)
        except KubeError as e:
            if e.transient:
                raise
            return Fail("permanent", f"Kubernetes refused to create Job {a.name}: {e}")
        a.job_created = True
        a.created_mono = time.monotonic()
        a.k8s_job_recorded = False
        if self._running.get(a.job_id) is a:
            self._unrecorded[a.job_id] = a
        m.CLAIM_TO_JOB.observe(max(0, now_ms() - a.claimed_ms) / 1000)
        log.info("created Job" if created else "Job already existed", extra=a.fields())
        return None

    # Bookkeeping writes must not stop the cycle from acting on every other attempt while the
    # database is away: they are retried on a later cycle instead. Each kind is one statement
    # for all attempts (store.batches).
    def started(self, a: Attempt, pod: PodView, now: int) -> None:
        """Note the attempt's pod started; `record` writes it."""
        a.recorded_start = True
        if a.claimed_here:
            m.CLAIM_TO_RUNNING.labels(type=a.job_type).observe(max(0, now - a.claimed_ms) / 1000)
        self._starts.append(
            (a, Started(a.job_id, a.attempt, pod.name, pod.node, pod.started_ms or now))
        )

    async def record(self) -> None:
        """Write the Job names and pod starts not yet in the database."""
        names = list(self._unrecorded.values())
        try:
            await self._batches.record(
                [(a.job_id, a.attempt, a.name) for a in names], [s for _, s in self._starts]
            )
            for a in names:
                a.k8s_job_recorded = True
                self._unrecorded.pop(a.job_id, None)
            self._starts.clear()
        except StoreError as e:
            for a, _ in self._starts:
                a.recorded_start = False
                if self._running.get(a.job_id) is a:  # decided again next cycle, which
                    self.set_beat(a, None)  # notes the start again
            self._starts.clear()
            log.warning("could not record Job names and starts yet: %s", e)
