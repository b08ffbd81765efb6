"""The engine: one loop per controller that keeps job rows and Kubernetes Jobs consistent.

Each cycle (every poll interval, or at once when a watch event arrives):
  1. list this namespace's managed Jobs and pods (one call each; this is also the full
     relist that keeps a silently stalled watch from stranding work);
  2. write outcomes still owed to the database (kept in memory while it is away);
  3. decide about every running attempt (controller.lifecycle) and act: create a missing
     Job, delete a stuck pod, queue an outcome;
  4. one heartbeat statement for every running row; rows it no longer finds `processing`
     were cancelled (or taken over): delete their Job with the grace period;
  5. finalize cancelled rows whose pods are confirmed gone;
  6. claim up to the free capacity, create one Job per row, and claim again at once when the
     batch was full.
Every write is safe to repeat: deterministic Job names, fenced conditional UPDATEs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from controller import __version__
from controller import metrics as m
from controller.builders import build_job
from controller.kube import Kube, KubeError
from controller.lifecycle import (
    Clocks,
    Complete,
    CreateJob,
    Decision,
    Fail,
    JobView,
    Kill,
    PodView,
    Progress,
    Retry,
    Running,
    decide,
)
from controller.logs import job_fields
from controller.names import job_name
from controller.settings import Settings
from controller.store import Beat, JobRow, JobStore, StoreError
from runner import contract as c

log = logging.getLogger("audiojob.engine")
SHUTDOWN_FLUSH_SECONDS = 10.0


def now_ms() -> int:
    return int(time.time() * 1000)


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
    memory: Progress = field(default_factory=Progress)
    kill_then: Fail | Retry | None = None
    recorded_start: bool = False
    k8s_job_recorded: bool = True

    @property
    def name(self) -> str:
        return job_name(self.job_id, self.attempt)

    def fields(self, **more: Any) -> dict[str, Any]:
        return job_fields(
            self.job_id, self.trace_id, attempt=self.attempt, k8s_job=self.name, **more
        )


@dataclass
class Owed:
    """An outcome decided but not yet written to the row."""

    attempt: Attempt
    outcome: Complete | Fail | Retry
    exit_code: int | None = None
    reason: str | None = None


class Engine:
    def __init__(self, *, settings: Settings, store: JobStore, kube: Kube) -> None:
        self.settings = settings
        self.store = store
        self.kube = kube
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.running: dict[str, Attempt] = {}
        self.owed: dict[str, Owed] = {}
        self.cancelling: dict[str, tuple[str, int]] = {}  # job_id -> (trace_id, noticed_ms)
        self.wake = asyncio.Event()
        self.stopping = False
        self.ready = False
        self.last_cycle_ms = 0
        self._adopted = False
        self._last_reconcile = 0.0
        self._last_worker_beat = 0.0
        self._last_heartbeat = 0.0
        self._jobs: dict[str, dict[str, Any]] = {}
        self._pods: dict[str, list[dict[str, Any]]] = {}
        self._pods_by_id: dict[str, list[dict[str, Any]]] = {}

    # -- the loop ---------------------------------------------------------------------
    async def run(self) -> None:
        backoff = 1.0
        while not self.stopping:
            try:
                await self.cycle()
                backoff = 1.0
                self.ready = True
                delay = self.settings.claim.poll_interval_seconds
            except (StoreError, KubeError) as e:
                # An outage: keep what we owe, back off, catch up when it is back.
                (m.DB_ERRORS if isinstance(e, StoreError) else m.API_ERRORS).inc()
                log.warning("cycle interrupted, retrying in %.0f s: %s", backoff, e)
                delay, backoff = backoff, min(backoff * 2, 30.0)
            except Exception:
                log.exception("unexpected error in the engine cycle")
                delay = self.settings.claim.poll_interval_seconds
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delay)

    @property
    def grace(self) -> int:
        return self.settings.timeouts.cancel_grace_seconds

    def poke(self) -> None:
        """A watch event arrived: run the next cycle now."""
        self.wake.set()

    async def start(self) -> None:
        await self.store.register_worker(self.worker_id, __version__)

    async def shutdown(self) -> None:
        """Stop claiming, flush what we owe (once), leave running Jobs to the next controller."""
        self.stopping = True
        self.wake.set()
        try:
            # Bounded: with the database away, exiting beats hanging; the outcomes are still
            # in the finished Jobs (no TTL yet) for the next controller to record.
            await asyncio.wait_for(self._flush_owed(), timeout=SHUTDOWN_FLUSH_SECONDS)
        except (StoreError, KubeError, TimeoutError) as e:
            log.warning(
                "could not write every outcome before exit (the next controller will "
                "re-derive them from the Jobs): %s",
                e,
            )

    async def cycle(self) -> None:
        m.CYCLES.inc()
        now = now_ms()
        await self._list()
        if (
            not self._adopted
            or time.monotonic() - self._last_reconcile
            > self.settings.claim.reconcile_interval_seconds
        ):
            await self._reconcile()
        await self._flush_owed()
        beats = await self._watch_running(now)
        if (
            time.monotonic() - self._last_heartbeat
            >= self.settings.claim.heartbeat_interval_seconds
            or not beats
        ):
            await self._heartbeat(beats)
        await self._finish_cancellations()
        if not self.stopping:
            await self._claim()
        if (
            time.monotonic() - self._last_worker_beat
            >= self.settings.claim.worker_heartbeat_seconds
        ):
            await self.store.worker_heartbeat(self.worker_id, len(self.running))
            self._last_worker_beat = time.monotonic()
        m.RUNNING.set(len(self.running))
        self.last_cycle_ms = now_ms()

    # -- 1. what exists ---------------------------------------------------------------
    async def _list(self) -> None:
        jobs = await self.kube.list_jobs()
        pods = await self.kube.list_pods()
        self._jobs = {j["metadata"]["name"]: j for j in jobs}
        self._pods = {}
        self._pods_by_id = {}
        for p in pods:
            jid = (p["metadata"].get("annotations") or {}).get(c.ANN_JOB_ID)
            if jid is not None:
                self._pods_by_id.setdefault(jid, []).append(p)
            owner = (p["metadata"].get("labels") or {}).get("job-name") or (
                p["metadata"].get("labels") or {}
            ).get("batch.kubernetes.io/job-name")
            if owner:
                self._pods.setdefault(owner, []).append(p)

    def _job_ids_in_cluster(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, job in self._jobs.items():
            jid = (job["metadata"].get("annotations") or {}).get(c.ANN_JOB_ID)
            if jid is not None:
                out.setdefault(jid, []).append(name)
        return out

    # -- reconcile: adopt, clean up -----------------------------------------------------
    async def _reconcile(self) -> None:
        for processing in await self.store.processing():
            jid = processing.job_id
            if jid not in self.running and jid not in self.owed:
                self.running[jid] = self._attempt_from_row(processing)
                log.info("adopted running job", extra=self.running[jid].fields())
        known = set(self.running) | set(self.owed) | set(self.cancelling)
        in_cluster = self._job_ids_in_cluster()
        strangers = [jid for jid in in_cluster if jid not in known]
        if strangers:
            found = await self.store.get_many(strangers)
            for jid in strangers:
                row: JobRow | None = found.get(jid)
                for name in in_cluster[jid]:
                    job = self._jobs[name]
                    if JobView.from_body(job).finished or job["metadata"].get("deletionTimestamp"):
                        continue
                    if (
                        row is None
                        or row.status in ("complete", "failed")
                        or row.status == "cancelled"
                    ):
                        log.info(
                            "deleting a Job whose row is %s",
                            row.status if row else "missing",
                            extra=job_fields(jid, row.trace_id if row else None, k8s_job=name),
                        )
                        await self.kube.delete_job(
                            name, self.settings.timeouts.cancel_grace_seconds
                        )
        self._adopted = True
        self._last_reconcile = time.monotonic()

    def _attempt_from_row(self, row: JobRow) -> Attempt:
        return Attempt(
            job_id=row.job_id,
            attempt=row.attempt,
            job_type=row.type,
            trace_id=row.trace_id or "",
            payload=row.payload,
            claimed_ms=row.started_at or row.updated_at,
            job_created=row.k8s_job is not None,
        )

    # -- 2. outcomes owed ---------------------------------------------------------------
    async def _flush_owed(self) -> None:
        for job_id, owed in list(self.owed.items()):
            a = owed.attempt
            o = owed.outcome
            res: str
            if isinstance(o, Complete):
                res = await self.store.complete(a.job_id, a.attempt, o.result)
                label = "complete"
            elif isinstance(o, Fail):
                res = await self.store.fail(a.job_id, a.attempt, error=o.error, kind=o.kind)
                label = o.kind
            else:
                res = await self.store.retry_or_fail(
                    a.job_id,
                    a.attempt,
                    error=o.error,
                    kind=o.kind,
                    backoff_seconds=self.settings.timeouts.retry_backoff_seconds,
                )
                label = "retried" if res == "requeued" else f"{o.kind}"
            del self.owed[job_id]
            m.OUTCOMES.labels(outcome=label if res != "stale" else "stale").inc()
            await self.store.attempt_ended(
                a.job_id, a.attempt, exit_code=owed.exit_code, reason=owed.reason, ended_ms=now_ms()
            )
            text = getattr(o, "error", "completed")
            log.info("recorded %s: %s", label, text, extra=a.fields(write=res))
            if res != "stale":
                await self._event(a, label, text, warning=not isinstance(o, Complete))
            # Only now may Kubernetes collect the finished Job.
            await self.kube.set_job_ttl(a.name, self.settings.runner.ttl_seconds_after_finished)

    async def _event(self, a: Attempt, reason: str, message: str, *, warning: bool) -> None:
        job = self._jobs.get(a.name)
        uid = job["metadata"].get("uid") if job else None
        try:
            await self.kube.event(a.name, uid, reason.capitalize(), message, warning=warning)
        except KubeError as e:
            log.debug("could not post event: %s", e)

    # -- 3. running attempts ----------------------------------------------------------
    def _clocks(self, job_type: str) -> Clocks:
        t = self.settings.timeouts
        return Clocks(
            job_type=job_type,
            run_timeout=t.run_timeout(job_type)
            if job_type in ("ingest", "preview", "save")
            else t.ingest_seconds,
            pending_timeout=t.pending_seconds,
            heartbeat_stale=t.heartbeat_stale_seconds,
            progress_stalled=t.progress_stalled_seconds,
        )

    async def _watch_running(self, now: int) -> list[Beat]:
        beats: list[Beat] = []
        for job_id, a in list(self.running.items()):
            job = self._jobs.get(a.name)
            pods = sorted(
                self._pods.get(a.name, []),
                key=lambda p: p["metadata"].get("creationTimestamp") or "",
            )
            pod = PodView.from_body(pods[-1]) if pods else None
            if a.kill_then is not None:
                if not pods:  # the killed pod is confirmed gone
                    self._owe(a, a.kill_then, pod)
                beats.append(Beat(job_id, a.attempt))
                continue
            decision: Decision = decide(
                job=JobView.from_body(job) if job else None,
                pod=pod,
                clocks=self._clocks(a.job_type),
                claimed_ms=a.claimed_ms,
                now_ms=now,
                memory=a.memory,
                job_was_created=a.job_created,
            )
            if a.job_created and not a.k8s_job_recorded:
                await self._record_k8s_job(a)
            if pod and not a.recorded_start and pod.phase != "Pending":
                await self._record_start(a, pod, now)
            if isinstance(decision, CreateJob):
                await self._create_job(a)
                beats.append(Beat(job_id, a.attempt))
            elif isinstance(decision, Running):
                beats.append(Beat(job_id, a.attempt, decision.stage, decision.progress))
            elif isinstance(decision, Kill):
                log.info("deleting pod: %s", decision.then.error, extra=a.fields())
                a.kill_then = decision.then
                await self.kube.delete_job(a.name, self.grace)
                beats.append(Beat(job_id, a.attempt))
            elif isinstance(decision, Complete | Fail | Retry):
                if (
                    isinstance(decision, Retry)
                    and pods
                    and not all(PodView.from_body(p).finished for p in pods)
                ):
                    # Retry only once the old pod can no longer run.
                    beats.append(Beat(job_id, a.attempt))
                    continue
                self._owe(a, decision, pod)
            else:
                beats.append(Beat(job_id, a.attempt))
        if self.owed:
            await self._flush_owed()
        return beats

    def _owe(self, a: Attempt, outcome: Complete | Fail | Retry, pod: PodView | None) -> None:
        self.running.pop(a.job_id, None)
        self.owed[a.job_id] = Owed(
            a,
            outcome,
            exit_code=pod.exit_code if pod else None,
            reason=(pod.term_reason if pod else None) or type(outcome).__name__.lower(),
        )

    # Bookkeeping writes must not stop the cycle from acting on every other attempt while the
    # database is away: they are retried on a later cycle instead.
    async def _record_start(self, a: Attempt, pod: PodView, now: int) -> None:
        try:
            await self.store.attempt_started(
                a.job_id, a.attempt, pod=pod.name, node=pod.node, started_ms=pod.started_ms or now
            )
            a.recorded_start = True
        except StoreError as e:
            log.warning("could not record the attempt's start yet: %s", e, extra=a.fields())

    async def _record_k8s_job(self, a: Attempt) -> None:
        try:
            await self.store.set_k8s_job(a.job_id, a.attempt, a.name)
            a.k8s_job_recorded = True
        except StoreError as e:
            log.warning("could not record the Job name yet: %s", e, extra=a.fields())

    async def _create_job(self, a: Attempt) -> None:
        body = build_job(
            job_id=a.job_id,
            job_type=a.job_type,
            attempt=a.attempt,
            trace_id=a.trace_id,
            payload_json=a.payload,
            settings=self.settings,
        )
        try:
            created = await self.kube.create_job(body)
        except KubeError as e:
            if e.transient:
                raise
            # The API refuses this Job (invalid, forbidden, quota): a person must act.
            self._owe(a, Fail("permanent", f"Kubernetes refused to create Job {a.name}: {e}"), None)
            return
        a.job_created = True
        a.k8s_job_recorded = False
        await self._record_k8s_job(a)
        m.CLAIM_TO_JOB.observe(max(0, now_ms() - a.claimed_ms) / 1000)
        log.info("created Job" if created else "Job already existed", extra=a.fields())

    # -- 4. heartbeat + cancellation detection ------------------------------------------
    async def _heartbeat(self, beats: list[Beat]) -> None:
        self._last_heartbeat = time.monotonic()
        if not beats:
            return
        gone = await self.store.heartbeat(beats)
        if not gone:
            return
        rows = await self.store.get_many(sorted(gone))
        for job_id in gone:
            a = self.running.pop(job_id, None)
            if a is None:
                continue
            row = rows.get(job_id)
            if row is not None and row.status == "cancelled":
                self.cancelling[job_id] = (a.trace_id, now_ms())
                log.info("row cancelled by the app; deleting its Job", extra=a.fields())
                await self._event(a, "cancelled", "the app cancelled this job", warning=False)
            else:
                log.warning(
                    "row is no longer ours (%s); deleting our Job",
                    row.status if row else "missing",
                    extra=a.fields(),
                )
            await self.kube.delete_job(a.name, self.grace)

    # -- 5. cancellations ---------------------------------------------------------------
    async def _finish_cancellations(self) -> None:
        rows = await self.store.cancelled_unfinalized()
        in_cluster = self._job_ids_in_cluster()
        for row in rows:
            names = in_cluster.get(row.job_id, [])
            pods = self._pods_by_id.get(row.job_id, [])
            if names or pods:
                for n in names:
                    if not self._jobs[n]["metadata"].get("deletionTimestamp"):
                        await self.kube.delete_job(n, self.grace)
                self.cancelling.setdefault(row.job_id, (row.trace_id or "", now_ms()))
                continue
            # Pod confirmed gone (or there never was one): now the row can say so.
            res = await self.store.finalize_cancelled(row.job_id)
            trace, noticed = self.cancelling.pop(row.job_id, (row.trace_id or "", now_ms()))
            self.running.pop(row.job_id, None)
            m.CANCEL_LATENCY.observe((now_ms() - noticed) / 1000)
            m.OUTCOMES.labels(outcome="cancelled").inc()
            log.info("cancellation finalized", extra=job_fields(row.job_id, trace, write=res))

    # -- 6. claim -----------------------------------------------------------------------
    async def _claim(self) -> None:
        while True:
            free = (
                self.settings.claim.max_concurrent
                - len(self.running)
                - len(self.cancelling)
                - len(self.owed)
            )
            if free <= 0:
                return
            claim = await self.store.claim(worker_id=self.worker_id, limit=free)
            for rejected in claim.rejected:
                m.REJECTED.inc()
                log.warning(
                    "rejected row: %s",
                    rejected.error,
                    extra=job_fields(rejected.row.job_id, rejected.row.trace_id),
                )
            m.CLAIMS.inc(len(claim.jobs) + len(claim.rejected))
            for claimed in claim.jobs:
                a = self._attempt_from_row(claimed.row)
                a.claimed_ms = now_ms()
                a.job_created = False
                self.running[a.job_id] = a
                log.info("claimed", extra=a.fields(type=a.job_type))
                await self._create_job(a)
            if len(claim.jobs) + len(claim.rejected) < free:
                return

    # -- queue depth for metrics --------------------------------------------------------
    async def count_queue(self) -> None:
        counts = await self.store.counts()
        m.QUEUE.labels(state="pending").set(counts.pending)
        m.QUEUE.labels(state="inflight").set(counts.inflight)

    def health(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "running": len(self.running),
            "owed": len(self.owed),
            "cancelling": len(self.cancelling),
            "last_cycle_ms": self.last_cycle_ms,
            "ready": self.ready,
        }
