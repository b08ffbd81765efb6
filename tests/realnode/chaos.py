"""What a chaos case on the real node records and judges.

- `ApiRecord`: every runner Job and pod the API server had in a namespace (a list, then a
  watch that resumes where it stopped), so Jobs collected by their TTL still count.
- `HostSampler`: the host's process table every few tenths of a second, each process mapped to
  its pod by the pod uid in its cgroup path, then to its row by the pod's annotation.
- `verdict`: the rows, the attempts ledger and both records against each other.
- `leftovers`: runner pods, Jobs, processes and mounts that outlive a case.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

from controller.settings import DbSettings
from controller.store import AttemptRow, JobRow, JobStore
from devcluster.node.cgroups import CgroupTree, hierarchies
from devcluster.node.containerd import Containerd
from devcluster.node.hoststate import mounts_under
from devcluster.node.realnode import RUNTIME_STATE, WORK
from runner import contract as c

MANAGED = f"{c.LABEL_MANAGED_BY}={c.LABEL_MANAGED_BY_VALUE}"
_POD_UID = re.compile(r"pod([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CONTAINER_ID = re.compile(r"\b[0-9a-f]{64}\b")


@dataclass
class Seen:
    """A runner Job or pod as the API server had it."""

    kind: str
    name: str
    uid: str
    job_id: str
    attempt: int


class ApiRecord:
    """Every managed Job and pod in `namespace`, one thread per kind. A failed watch is
    relisted; what was seen stays recorded after it is deleted."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        batch, core = kubernetes.client.BatchV1Api(api), kubernetes.client.CoreV1Api(api)
        self._lists = {"Job": batch.list_namespaced_job, "Pod": core.list_namespaced_pod}
        self.namespace = namespace
        self.seen: dict[str, Seen] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._follow, args=(kind,), daemon=True) for kind in self._lists
        ]
        self._synced = {kind: threading.Event() for kind in self._lists}

    def __enter__(self) -> ApiRecord:
        for t in self._threads:
            t.start()
        for event in self._synced.values():
            if not event.wait(60):
                raise TimeoutError("the first list of runner Jobs and pods took over 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def of(self, kind: str) -> list[Seen]:
        return [s for s in list(self.seen.values()) if s.kind == kind]

    def _follow(self, kind: str) -> None:
        list_fn = self._lists[kind]
        while not self._stop.is_set():
            try:
                listed = list_fn(self.namespace, label_selector=MANAGED)
                for obj in listed.items:
                    self._record(kind, obj)
                self._synced[kind].set()
                rv = listed.metadata.resource_version
                while not self._stop.is_set():
                    w = kubernetes.watch.Watch()
                    for event in w.stream(
                        list_fn, self.namespace, label_selector=MANAGED,
                        resource_version=rv, timeout_seconds=5, _request_timeout=30,
                    ):  # fmt: skip
                        self._record(kind, event["object"])
                    rv = w.resource_version or rv
            except Exception:  # an apiserver hiccup or 410 Gone: relist
                time.sleep(0.5)

    def _record(self, kind: str, obj: Any) -> None:
        meta = obj.metadata
        if meta.uid in self.seen:
            return
        self.seen[meta.uid] = Seen(
            kind=kind,
            name=meta.name,
            uid=meta.uid,
            job_id=(meta.annotations or {}).get(c.ANN_JOB_ID, "?"),
            attempt=int((meta.labels or {}).get(c.LABEL_ATTEMPT, "0")),
        )


# --- the host ---------------------------------------------------------------------------


def pod_processes() -> dict[str, list[tuple[int, str]]]:
    """(pid, name) of every process in the real node's pods, by pod uid; pause programs left
    out (a sandbox outlives its containers by a moment, and runs nothing)."""
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    memory = [h for h in hierarchies() if (h / "memory.limit_in_bytes").exists()]
    for root in memory[:1]:
        pods = root / CgroupTree().name / "pods"
        # os.walk, not rglob: a pod's cgroup may vanish mid-walk, which rglob raises on.
        for where, _, files in os.walk(pods):
            uid = _POD_UID.search(where)
            if uid is None or "cgroup.procs" not in files:
                continue
            with contextlib.suppress(OSError):
                for pid in Path(where, "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):  # gone meanwhile
                        comm = Path(f"/proc/{pid}/comm").read_text().strip()
                        if comm != "pause":
                            found[uid.group(1)].append((int(pid), comm))
    return dict(found)


@dataclass
class HostSampler:
    """`pod_processes()` every `interval` seconds in a thread, kept when something ran."""

    interval: float = 0.2
    samples: list[tuple[float, dict[str, list[tuple[int, str]]]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def running(self) -> Iterator[HostSampler]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sample = pod_processes()
            except Exception as e:  # kept, so a blind sampler fails the case instead
                self.errors.append(repr(e))
                continue
            if sample:
                self.samples.append((time.monotonic(), sample))


def ffmpegs(sample: dict[str, list[tuple[int, str]]], runner_uids: set[str]) -> int:
    return sum(comm == "ffmpeg" for u, ps in sample.items() if u in runner_uids for _, comm in ps)


# --- the job table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """The job table as the app sees it, through the test server (the host is never cut off)."""

    db: DbSettings

    def _run(self, fn: Callable[[JobStore], Any]) -> Any:
        async def go() -> Any:
            async with await JobStore.open(self.db) as store:
                return await fn(store)

        return asyncio.run(go())

    def insert(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        async def go(store: JobStore) -> None:
            for job_id, payload in rows:
                await store.insert(job_id=job_id, type="ingest", payload=payload)

        self._run(go)

    def rows(self, ids: Sequence[str]) -> dict[str, JobRow]:
        return dict(self._run(lambda s: s.get_many(ids)))

    def ended(self, ids: Sequence[str]) -> dict[str, JobRow] | None:
        """The rows, once every one of them is complete or failed."""
        rows = self.rows(ids)
        done = len(rows) == len(ids) and all(
            r.status in ("complete", "failed") for r in rows.values()
        )
        return rows if done else None

    def attempts(self, ids: Sequence[str]) -> dict[str, list[AttemptRow]]:
        async def go(store: JobStore) -> dict[str, list[AttemptRow]]:
            return {i: await store.attempts(i) for i in ids}

        return dict(self._run(go))


# --- the verdict --------------------------------------------------------------------------


@dataclass
class Verdict:
    outcomes: dict[str, int]
    retried: list[str]
    double_runs: list[str]
    problems: list[str]


def verdict(
    rows: dict[str, JobRow],
    ledger: dict[str, list[AttemptRow]],
    record: ApiRecord,
    sampler: HostSampler,
) -> Verdict:
    """Every row ended once, complete with a result or failed with a sentence; the ledger,
    the Jobs the API server had and the row agree on its attempts; no instant saw two runner
    pods, or two ffmpeg processes, working for one row."""
    problems: list[str] = []
    outcomes: dict[str, int] = defaultdict(int)
    for job_id, row in sorted(rows.items()):
        outcomes[row.status] += 1
        if row.status == "complete":
            if "duration" not in (row.result_json() or {}):
                problems.append(f"{job_id} is complete without a result: {row.result!r}")
        elif row.status == "failed":
            if not (row.error or "").strip() or "Traceback" in (row.error or ""):
                problems.append(f"{job_id} failed without a sentence: {row.error!r}")
        else:
            problems.append(f"{job_id} did not end: {row.status}")
    jobs: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for job in record.of("Job"):
        jobs[job.job_id][job.attempt].append(job.uid)
    for job_id, row in sorted(rows.items()):
        runs = ledger.get(job_id, [])
        created = jobs.get(job_id, {})
        if sorted(a.attempt for a in runs) != sorted(created):
            problems.append(
                f"{job_id}: the ledger has attempts {[a.attempt for a in runs]}, the API server "
                f"had Jobs for attempts {sorted(created)}"
            )
        twice = {a: uids for a, uids in created.items() if len(uids) > 1}
        if twice:
            problems.append(f"{job_id}: a Job was created more than once for attempt(s) {twice}")
        if runs and row.attempt != max(a.attempt for a in runs):
            problems.append(f"{job_id}: the row is at attempt {row.attempt}, the ledger at "
                            f"{max(a.attempt for a in runs)}")  # fmt: skip
        problems += _ledger_overlaps(job_id, runs)
    double = _double_runs(record, sampler)
    problems += [f"the host sampler failed: {e}" for e in sampler.errors[:3]]
    return Verdict(
        outcomes=dict(outcomes),
        retried=sorted(j for j, runs in ledger.items() if len(runs) > 1),
        double_runs=double,
        problems=problems + double,
    )


def _ledger_overlaps(job_id: str, runs: list[AttemptRow]) -> list[str]:
    found = []
    ordered = sorted(runs, key=lambda a: a.attempt)
    for a in ordered:
        if a.ended_at is None:
            found.append(f"{job_id}: attempt {a.attempt} never ended in the ledger ({a})")
    for earlier, later in itertools.pairwise(ordered):
        # started_at is a Kubernetes time, whole seconds rounded down; ended_at is the
        # database's ms. An attempt 2 that started 200 ms after attempt 1 ended reads as
        # 800 ms before it (seen on node-stopped): only a whole second is an overlap.
        if earlier.ended_at and later.started_at and later.started_at + 1000 <= earlier.ended_at:
            found.append(
                f"{job_id}: attempt {later.attempt} started at {later.started_at}, before "
                f"attempt {earlier.attempt} ended at {earlier.ended_at}"
            )
    return found


def _double_runs(record: ApiRecord, sampler: HostSampler) -> list[str]:
    pods = {p.uid: p for p in record.of("Pod")}
    found: list[str] = []
    flagged: set[str] = set()
    for at, sample in sampler.samples:
        by_row: dict[str, dict[str, list[str]]] = defaultdict(dict)
        for uid, procs in sample.items():
            pod = pods.get(uid)
            if pod is None:
                continue  # the controller's own pod (not a runner: no job-id)
            by_row[pod.job_id][pod.name] = [comm for _, comm in procs]
        for job_id, live in by_row.items():
            ffmpeg = sum(comms.count("ffmpeg") for comms in live.values())
            if (len(live) > 1 or ffmpeg > 1) and job_id not in flagged:
                flagged.add(job_id)
                found.append(f"{job_id}: at t={at:.1f} two runs at once: {dict(live)}")
    return found


# --- what a case leaves behind -----------------------------------------------------------


def leftovers(
    core: kubernetes.client.CoreV1Api, namespace: str, ctrd: Containerd, node: str
) -> list[str]:
    """Runner pods and Jobs in `namespace`, and on the host: processes of pods the API server
    no longer has, mounts naming a pod or container that is gone, and more of the CNI's
    network namespaces than `node` has pods."""
    found: list[str] = []
    batch = kubernetes.client.BatchV1Api(core.api_client)
    found += [f"pod {p.metadata.name}" for p in
              core.list_namespaced_pod(namespace, label_selector=MANAGED).items]  # fmt: skip
    found += [f"Job {j.metadata.name}" for j in
              batch.list_namespaced_job(namespace, label_selector=MANAGED).items]  # fmt: skip
    live_pods = {p.metadata.uid for p in core.list_pod_for_all_namespaces().items}
    for uid, procs in pod_processes().items():
        if uid not in live_pods:
            found.append(f"processes {procs} of pod {uid}, which the API server no longer has")
    tasks = set(ctrd.ctr("tasks", "ls", "-q", timeout=30).stdout.split())
    for prefix in (WORK, RUNTIME_STATE):
        for mount in mounts_under(prefix):
            gone = [u for u in _UUID.findall(str(mount)) if u not in live_pods]
            gone += [i for i in _CONTAINER_ID.findall(str(mount)) if i not in tasks]
            if gone:
                found.append(f"mount {mount}")
    # A network namespace is named by a random uuid, not by its pod: count them instead.
    netns = [m for m in mounts_under(Path("/run/netns")) if m.name.startswith("cni-")]
    on_node = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    if len(netns) > len(on_node):
        found.append(f"{len(netns)} pod network namespaces for {len(on_node)} pods on {node}")
    return found
