"""The index: this namespace's managed Jobs and pods as last seen, keyed by Job name and job id.

It holds snapshots (controller.snapshots), never whole bodies. Watch events keep it current; a
full relist replaces it at start and every `reconcile_interval_seconds`, which also covers a
watch that silently stalled or restarted.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from controller.snapshots import JobView, PodView

if TYPE_CHECKING:
    from controller.kube import Kube


TOUCHED_CAP = 100_000
"""Job names remembered as changed between two cycles; past it, the next cycle looks at all."""


class View:
    def __init__(self) -> None:
        self._jobs: dict[str, JobView] = {}
        self._pods: dict[str, PodView] = {}
        self._pods_of_job: dict[str, dict[str, PodView]] = {}
        self._jobs_of_id: dict[str, set[str]] = {}
        self._pods_of_id: dict[str, set[str]] = {}
        self._listing = False
        self._during_list: list[tuple[str, str, JobView | PodView | None]] = []
        """Events during a relist, as (kind, name, snapshot or None when deleted)."""
        self.listed_mono = float("-inf")
        """`time.monotonic()` when the last full relist was sent: the view holds everything
        that existed then (and whatever watch events said since)."""
        self.generation = 0
        """How many relists replaced the view."""
        self.versions: dict[str, str] = {}
        """The resourceVersion of the last relist, by kind ("job", "pod"): where the watches
        (controller.watch) start from."""
        self.want_list = False
        """A watch lost its place (410 Gone): relist in the next cycle."""
        self._listed = asyncio.Event()
        self._touched: set[str] | None = set()
        """Job names whose Job or pods changed since the engine last asked (`take_touched`);
        None when too many piled up unasked: the engine then looks at every attempt."""

    # -- reading ----------------------------------------------------------------------------
    def job(self, name: str) -> JobView | None:
        return self._jobs.get(name)

    def pods_of(self, job_name: str) -> list[PodView]:
        """The Job's pods, oldest first."""
        pods = self._pods_of_job.get(job_name)
        if not pods:
            return []
        if len(pods) == 1:  # the usual case, asked for every attempt in every cycle
            return list(pods.values())
        return sorted(pods.values(), key=lambda p: p.created_ms)

    def jobs_of(self, job_id: str) -> list[JobView]:
        return [self._jobs[n] for n in sorted(self._jobs_of_id.get(job_id, ()))]

    def has_pods_of(self, job_id: str) -> bool:
        return bool(self._pods_of_id.get(job_id))

    def job_ids(self) -> list[str]:
        return [jid for jid, names in self._jobs_of_id.items() if names]

    def take_touched(self) -> set[str] | None:
        """The Job names whose Job or pods a watch event changed since the last call, or None
        when that is not known (too many, or never asked): look at every one then. A relist
        changes `generation`, which the caller checks on its own."""
        touched, self._touched = self._touched, set()
        return touched

    def covers(self, since_mono: float) -> bool:
        """True when a full relist was sent after `since_mono`."""
        return self.listed_mono > since_mono

    # -- a full relist ----------------------------------------------------------------------
    async def relist(self, kube: Kube) -> None:
        """List every managed Job and pod (in pages) and replace the view with them."""
        sent = self.begin_list()
        versions: dict[str, str] = {}
        jobs: list[JobView] = []
        pods: list[PodView] = []
        try:
            # Every page of one list carries the version of the first.
            async for page, version in kube.list_jobs():
                jobs.extend(JobView.from_body(b) for b in page)
                versions.setdefault("job", version)
            async for page, version in kube.list_pods():
                pods.extend(PodView.from_body(b) for b in page)
                versions.setdefault("pod", version)
        except BaseException:
            self.abort_list()
            raise
        self.replace(jobs, pods, sent_mono=sent, versions=versions)

    def begin_list(self) -> float:
        """Call right before sending the lists; events from now on are replayed after them."""
        self._listing = True
        self._during_list = []
        return time.monotonic()

    def replace(
        self,
        jobs: list[JobView],
        pods: list[PodView],
        *,
        sent_mono: float,
        versions: dict[str, str] | None = None,
    ) -> None:
        self._jobs.clear()
        self._pods.clear()
        self._pods_of_job.clear()
        self._jobs_of_id.clear()
        self._pods_of_id.clear()
        for job in jobs:
            self._put_job(job)
        for pod in pods:
            self._put_pod(pod)
        self._listing = False
        # An event that came while the lists were in flight may be newer than them.
        replay, self._during_list = self._during_list, []
        for kind, name, snap in replay:
            self._index(kind, name, snap)
        self.listed_mono = sent_mono
        self.versions = dict(versions or {})
        self.want_list = False
        self.generation += 1
        listed, self._listed = self._listed, asyncio.Event()
        listed.set()

    async def listed_after(self, generation: int) -> None:
        """Return once a relist newer than `generation` replaced the view."""
        while self.generation <= generation:
            await self._listed.wait()

    def abort_list(self) -> None:
        self._listing = False
        self._during_list = []

    # -- watch events -----------------------------------------------------------------------
    def apply(self, kind: str, event: str, body: dict[str, Any]) -> None:
        """One watch event: `kind` is "job" or "pod", `event` ADDED, MODIFIED or DELETED."""
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        snap: JobView | PodView | None = None
        if event != "DELETED":
            snap = JobView.from_body(body) if kind == "job" else PodView.from_body(body)
        if self._listing:
            # The snapshot waits for the list, never the body: under load a relist overlaps
            # with thousands of events (peak memory, bench/README.md).
            self._during_list.append((kind, name, snap))
        self._index(kind, name, snap)

    def _index(self, kind: str, name: str, snap: JobView | PodView | None) -> None:
        if self._touched is not None:
            if kind == "job":
                self._touched.add(name)
            else:
                pod = snap if isinstance(snap, PodView) else self._pods.get(name)
                if pod is not None and pod.job_name:
                    self._touched.add(pod.job_name)
            if len(self._touched) > TOUCHED_CAP:
                self._touched = None
        if isinstance(snap, JobView):
            self._put_job(snap)
        elif isinstance(snap, PodView):
            self._put_pod(snap)
        elif kind == "job":
            self._drop_job(name)
        else:
            self._drop_pod(name)

    # -- bookkeeping of the indexes ---------------------------------------------------------
    def _put_job(self, job: JobView) -> None:
        self._drop_job(job.name)
        self._jobs[job.name] = job
        if job.job_id is not None:
            self._jobs_of_id.setdefault(job.job_id, set()).add(job.name)

    def _drop_job(self, name: str) -> None:
        old = self._jobs.pop(name, None)
        if old is not None and old.job_id is not None:
            names = self._jobs_of_id.get(old.job_id)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._jobs_of_id[old.job_id]

    def _put_pod(self, pod: PodView) -> None:
        self._drop_pod(pod.name)
        self._pods[pod.name] = pod
        if pod.job_name:
            self._pods_of_job.setdefault(pod.job_name, {})[pod.name] = pod
        if pod.job_id is not None:
            self._pods_of_id.setdefault(pod.job_id, set()).add(pod.name)

    def _drop_pod(self, name: str) -> None:
        old = self._pods.pop(name, None)
        if old is None:
            return
        if old.job_name:
            of_job = self._pods_of_job.get(old.job_name)
            if of_job is not None:
                of_job.pop(name, None)
                if not of_job:
                    del self._pods_of_job[old.job_name]
        if old.job_id is not None:
            of_id = self._pods_of_id.get(old.job_id)
            if of_id is not None:
                of_id.discard(name)
                if not of_id:
                    del self._pods_of_id[old.job_id]
