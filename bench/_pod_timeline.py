"""Where a real pod's start goes (bench_realpods.py): its steps from the real node's logs.

containerd at log level info (AUDIOJOB_CONTAINERD_LOG_LEVEL, set by the bench) logs each CRI
call the kubelet makes, with nanosecond times: RunPodSandbox (the pause container and the pod's
network, CNI), CreateContainer, StartContainer, each when asked and when it returns. The
kubelet at its usual verbosity logs, per pod, when it observed the container running (its PLEG
relist, every 1 s, found it) and when it saw its own status update come back on its watch.
Together with the bench's own watch (pod created, bound to the node, Running) they split
claim -> Running into steps, all in wall-clock seconds of this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

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
