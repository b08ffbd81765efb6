"""Which rows are ours: claim pending rows, adopt our own after a restart, take over a dead
installation's rows once their pods cannot still run, delete Jobs whose rows are gone or
finished (see "Ownership" in controller.lifecycle)."""

from __future__ import annotations

import logging

from controller import __version__
from controller import metrics as m
from controller.engine.attempts import Attempt, Attempts
from controller.engine.outcomes import Outcomes
from controller.engine.view import View
from controller.kube import Kube, KubeError
from controller.lifecycle import orphan_to_delete, run_deadlines
from controller.logs import job_fields
from controller.settings import Settings
from controller.store import JobRow, JobStore
from controller.store.ownership import Orphan, Ownership

log = logging.getLogger("audiojob.engine")


class Claims:
    def __init__(
        self,
        *,
        owner: str,
        settings: Settings,
        store: JobStore,
        kube: Kube,
        view: View,
        attempts: Attempts,
        outcomes: Outcomes,
        grace: int,
    ) -> None:
        self.owner = owner
        self._settings = settings
        self._store = store
        self._own = Ownership(store, settings.db.table)
        self._kube = kube
        self._view = view
        self._attempts = attempts
        self._outcomes = outcomes
        self._grace = grace
        self._deadlines = run_deadlines(
            settings.timeouts, margin=settings.ownership.takeover_margin_seconds
        )
        self._longest = max(self._deadlines.values())

    async def beat(self, active: int, *, start: bool = False) -> None:
        """Renew this installation's lease on its rows (the database's clock stamps it)."""
        await self._own.beat(self.owner, __version__, active, longest_ms=self._longest, start=start)

    async def adopt(self) -> None:
        """Take up the processing rows this installation claimed (before a restart)."""
        for row in await self._store.processing(worker_id=self.owner):
            if row.job_id not in self._attempts and row.job_id not in self._outcomes:
                a = Attempt.from_row(row)
                self._attempts.add(a)
                log.info("adopted running job", extra=a.fields())

    async def delete_orphans(self, known: set[str]) -> None:
        """Delete the Jobs in our view whose row is finished, cancelled or missing."""
        # Only Jobs that could be deleted are looked up: a finished one is left to its TTL
        # whatever its row says (orphan_to_delete), and every finished Job stays in the view
        # until the TTL (10 min) collects it, so reading their rows read thousands every
        # reconcile at a few rows/s (bench/README.md, run L).
        strangers = [
            jid
            for jid in self._view.job_ids()
            if jid not in known
            and any(
                orphan_to_delete(job, self._view.pods_of(job.name), None)
                for job in self._view.jobs_of(jid)
            )
        ]
        if not strangers:
            return
        found = await self._store.get_many(strangers)
        for jid in strangers:
            row: JobRow | None = found.get(jid)
            for job in self._view.jobs_of(jid):
                pods = self._view.pods_of(job.name)
                if orphan_to_delete(job, pods, row.status if row else None):
                    log.info(
                        "deleting a Job whose row is %s",
                        row.status if row else "missing",
                        extra=job_fields(jid, row.trace_id if row else None, k8s_job=job.name),
                    )
                    await self._kube.delete_job(job.name, self._grace)

    async def claim(self, free: int) -> tuple[list[Attempt], bool]:
        """Claim up to `free` rows in one statement; returns the new attempts and whether the
        batch was full (so there may be more)."""
        if free <= 0:
            return [], False
        claim = await self._store.claim(
            worker_id=self.owner, limit=free, deadlines_ms=self._deadlines
        )
        for rejected in claim.rejected:
            m.REJECTED.inc()
            log.warning(
                "rejected row: %s",
                rejected.error,
                extra=job_fields(rejected.row.job_id, rejected.row.trace_id),
            )
        m.CLAIMS.inc(len(claim.jobs) + len(claim.rejected))
        new: list[Attempt] = []
        for claimed in claim.jobs:
            a = Attempt.from_row(claimed.row, claimed_now=True)
            self._attempts.add(a)
            log.info("claimed", extra=a.fields(type=a.job_type))
            new.append(a)
        return new, len(claim.jobs) + len(claim.rejected) >= free

    # -- a dead installation's rows --------------------------------------------------------
    def _finished_here(self, row: JobRow) -> bool:
        """The old attempt's Job is in our own view and can no longer run anything."""
        if row.k8s_job is None or (job := self._view.job(row.k8s_job)) is None:
            return False
        return job.finished and all(p.finished for p in self._view.pods_of(job.name))

    async def take_over(self, free: int, *, gated: bool = True) -> list[Attempt]:
        """Claim rows of dead installations as new attempts, up to `free`, and finalize their
        cancelled rows, once no pod of the old attempt can still be running. One statement
        when nothing is eligible (engine.loop runs this every `takeover_interval_seconds`)."""
        lease_ms = round(self._settings.ownership.owner_lease_seconds * 1000)
        taken: list[Attempt] = []
        for orphan in await self._own.dead_rows(
            me=self.owner, lease_ms=lease_ms, longest_ms=self._longest, limit=free, gated=gated
        ):
            at_once = self._finished_here(orphan.row)
            if not (orphan.past_deadline or at_once):
                continue
            why = "its run deadline passed" if orphan.past_deadline else "its Job has finished"
            if orphan.row.status == "cancelled":
                await self._store.finalize_cancelled(orphan.row.job_id)
                log.info(
                    "finalized a cancelled row of dead installation %s (%s)",
                    orphan.row.claimed_by,
                    why,
                    extra=job_fields(orphan.row.job_id, orphan.row.trace_id),
                )
                await self._collect(orphan.row.k8s_job)
                continue
            row = await self._own.take_over(
                orphan.row,
                me=self.owner,
                lease_ms=lease_ms,
                deadlines_ms=self._deadlines,
                at_once=at_once,
            )
            if row is not None:
                taken.append(await self._took(orphan, row, why))
                await self._collect(orphan.row.k8s_job)
        return taken

    async def _collect(self, name: str | None) -> None:
        """A dead owner's finished Job in our view never got its TTL (that comes with the
        recorded outcome); its attempt is history now, so let the TTL collect it."""
        if name is None or (job := self._view.job(name)) is None or not job.finished:
            return
        try:
            await self._kube.set_job_ttl(name, self._settings.runner.ttl_seconds_after_finished)
        except KubeError as e:  # the Job stays until someone deletes it; nothing runs
            log.warning("could not set the TTL of Job %s of a taken-over row: %s", name, e)

    async def _took(self, orphan: Orphan, row: JobRow, why: str) -> Attempt:
        old = orphan.row
        a = Attempt.from_row(row, claimed_now=True)
        self._attempts.add(a)
        m.CLAIMS.inc()
        log.warning(
            "took over a row of installation %s, whose lease ran out, as attempt %d (%s)",
            old.claimed_by,
            a.attempt,
            why,
            extra=a.fields(type=a.job_type),
        )
        return a
