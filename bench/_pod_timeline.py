"""Where a real pod's start goes (bench_realpods.py): its steps from the real node's logs.

containerd at log level info (AUDIOJOB_CONTAINERD_LOG_LEVEL, set by the bench) logs each CRI
call the kubelet makes, with nanosecond times: RunPodSandbox (the pause container and the pod's
network, CNI), CreateContainer, StartContainer, each when asked and when it returns. The
kubelet at its usual verbosity logs, per pod, when it observed the container running (its PLEG
relist, every 1 s, found it) and when it saw its own status update come back on its watch.
Together with the bench's own watches (`PodWatch`: pod created, bound, Running, deleted) they split
claim -> Running into steps, all in wall-clock seconds of this machine.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes

_TIME = re.compile(r'^time="([^"]+)"')
_SANDBOX = re.compile(r"RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),")
_SANDBOX_DONE = re.compile(r'returns sandbox id \\?"([0-9a-f]+)')
_CREATE = re.compile(r'CreateContainer within sandbox \\?"([0-9a-f]+)')
_CREATE_DONE = re.compile(r'returns container id \\?"([0-9a-f]+)')
_START = re.compile(r'StartContainer for \\?"([0-9a-f]+)')
_KUBELET = re.compile(
    r'"Observed pod startup duration" pod="[^/]+/([^"]+)".*'
    r'observedRunningTime="([^"]+?) \+0000 UTC m=[^"]*" '
    r'watchObservedRunningTime="([^"]+?) \+0000 UTC m=[^"]*"'
)


def _ts(text: str) -> float:
    """An RFC 3339 time with up to nanoseconds (Python takes microseconds) as epoch seconds."""
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, frac = text.split(".", 1)
        digits = re.match(r"\d+", frac)
        assert digits is not None
        tz = frac[digits.end() :]
        text = f"{head}.{digits.group()[:6].ljust(6, '0')}{tz}"
    return datetime.fromisoformat(text).timestamp()


def _kubelet_ts(text: str) -> float:
    return _ts(text.replace(" ", "T") + "+00:00")


@dataclass
class Steps:
    """Epoch seconds of one pod's steps on the node (None where the log had nothing)."""

    sandbox_asked: float | None = None
    sandbox_done: float | None = None
    create_asked: float | None = None
    start_asked: float | None = None
    start_done: float | None = None
    kubelet_running: float | None = None
    """The kubelet observed the container running (after a PLEG relist)."""
    kubelet_watch_running: float | None = None
    """The kubelet saw its Running status back from the API server."""
    sandbox_id: str = ""
    container_ids: list[str] = field(default_factory=list)


def node_steps(containerd_log: Path, kubelet_log: Path) -> dict[str, Steps]:
    """Steps by pod name; a pod whose sandbox was made more than once keeps the first."""
    by_pod: dict[str, Steps] = {}
    pod_of_sandbox: dict[str, str] = {}
    pod_of_container: dict[str, str] = {}
    for line in containerd_log.read_text(errors="replace").splitlines():
        t = _TIME.search(line)
        if not t:
            continue
        when = _ts(t.group(1))
        if m := _SANDBOX.search(line):
            steps = by_pod.setdefault(m.group(1), Steps())
            if (done := _SANDBOX_DONE.search(line)) is not None:
                if steps.sandbox_done is None:
                    steps.sandbox_done, steps.sandbox_id = when, done.group(1)
                    pod_of_sandbox[done.group(1)] = m.group(1)
            elif steps.sandbox_asked is None:
                steps.sandbox_asked = when
        elif m := _CREATE.search(line):
            pod = pod_of_sandbox.get(m.group(1))
            if pod is None:
                continue
            steps = by_pod[pod]
            if (done := _CREATE_DONE.search(line)) is not None:
                steps.container_ids.append(done.group(1))
                pod_of_container[done.group(1)] = pod
            elif steps.create_asked is None:
                steps.create_asked = when
        elif m := _START.search(line):
            pod = pod_of_container.get(m.group(1))
            if pod is None:
                continue
            steps = by_pod[pod]
            if "returns successfully" in line:
                steps.start_done = steps.start_done or when
            else:
                steps.start_asked = steps.start_asked or when
    for line in kubelet_log.read_text(errors="replace").splitlines():
        if (m := _KUBELET.search(line)) and m.group(1) in by_pod:
            steps = by_pod[m.group(1)]
            steps.kubelet_running = _kubelet_ts(m.group(2))
            steps.kubelet_watch_running = _kubelet_ts(m.group(3))
    return by_pod


class PodWatch:
    """When each runner pod (by its row's job id) was first seen, bound to a node, Running and
    deleted, and when its Job's deletion was seen, from watches on the namespace (wall clock,
    this machine)."""

    def __init__(
        self, core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, namespace: str
    ) -> None:
        self.created: dict[str, float] = {}
        self.scheduled: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.job_deleted: dict[str, float] = {}
        self.uids: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self._stop = threading.Event()
        for lister, on_event in (
            (core.list_namespaced_pod, self._pod),
            (batch.list_namespaced_job, self._job),
        ):
            threading.Thread(
                target=self._follow, args=(lister, namespace, on_event), daemon=True
            ).start()

    def _follow(
        self, lister: Any, namespace: str, on_event: Callable[[str, Any, float], None]
    ) -> None:
        """One watch, resumed whenever it ends, until `stop`; each event with when it was seen."""
        while not self._stop.is_set():
            w = kubernetes.watch.Watch()
            with contextlib.suppress(Exception):
                for event in w.stream(lister, namespace, timeout_seconds=30):
                    on_event(event["type"], event["object"], time.time())
                    if self._stop.is_set():
                        return

    def _job(self, type_: str, job: Any, seen: float) -> None:
        job_id = (job.metadata.annotations or {}).get("audiojob.dev/job-id")
        if job_id and (type_ == "DELETED" or job.metadata.deletion_timestamp):
            self.job_deleted.setdefault(job_id, seen)

    def _pod(self, type_: str, pod: Any, seen: float) -> None:
        job_id = (pod.metadata.annotations or {}).get("audiojob.dev/job-id")
        if not job_id:
            return
        self.uids.setdefault(job_id, pod.metadata.uid)
        self.names.setdefault(job_id, pod.metadata.name)
        self.created.setdefault(job_id, seen)
        if pod.spec and pod.spec.node_name:
            self.scheduled.setdefault(job_id, seen)
        # A runner done in under a second can go from Pending to Succeeded in one status
        # update: its first sight past Pending is then the (late) bound on when it ran,
        # counted against us.
        if pod.status and pod.status.phase in ("Running", "Succeeded", "Failed"):
            self.running.setdefault(job_id, seen)
        if pod.metadata.deletion_timestamp is not None:
            self.deleted.setdefault(job_id, seen)

    def stop(self) -> None:
        self._stop.set()


STEPS = (
    "claim -> pod seen (Job, then its pod)",
    "pod seen -> bound to the node (scheduler)",
    "bound -> sandbox asked (kubelet: admit, volumes)",
    "sandbox (pause container, CNI)",
    "sandbox -> container started (create, start)",
    "started -> kubelet sees it running (PLEG relist)",
    "kubelet sees it -> Running on our watch (status)",
)


def split(started: float, watch: PodWatch, job_id: str, steps: Steps | None) -> list[float | None]:
    """The seconds of each of STEPS for one job (None where a time is missing)."""
    marks = [
        started,
        watch.created.get(job_id),
        watch.scheduled.get(job_id),
        steps and steps.sandbox_asked,
        steps and steps.sandbox_done,
        steps and steps.start_done,
        steps and steps.kubelet_running,
        watch.running.get(job_id),
    ]
    pairs = itertools.pairwise(marks)
    return [b - a if a is not None and b is not None else None for a, b in pairs]
