"""When Jobs appear in a namespace, to well under a second, for bench_controller.py's rates.

Jobs' `creationTimestamp` has 1 s resolution: 1,000 Jobs created in ~6 s give rates in steps
of ~17% (1000/6 vs 1000/7), too coarse to compare the controller with a bare client. Instead a
watch on the namespace's Jobs, opened before the run, stamps `time.monotonic()` when each ADDED
event arrives. The watcher runs in its own process so that it observes both sides alike: the
controller is a process of its own, while the bare client's 16 threads share the bench
process's GIL, which would stamp an in-process watcher's events late while they are busy.

Run as `python -m bench._job_watch KUBECONFIG NAMESPACE N`: prints `ready` once the apiserver
has answered the watch (it registers the watcher before it sends the response headers), then,
after N ADDED events, one JSON object with their monotonic times and the watch's resumes, and
exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes

REPO = Path(__file__).resolve().parents[1]


def _lines(resp: Any) -> Iterator[tuple[float, bytes]]:
    """Complete lines of a streaming response, each with the time its last chunk arrived."""
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        now = time.monotonic()
        pending += chunk
        *done, pending = pending.split(b"\n")
        for line in done:
            if line.strip():
                yield now, line


# Metadata only: a fraction of the bytes to encode and decode per event, so the watcher keeps up
# on a loaded machine (the apiserver closes a watch whose buffer stays full).
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def watch_added(kubeconfig: str, namespace: str, n: int) -> dict[str, Any]:
    """The arrival times of the first n ADDED events, and how often the watch had to resume.

    On 2 shared cores the apiserver still closes a watcher now and then ("Forcing watcher close
    due to unresponsiveness"); the watch then resumes from the last resourceVersion it saw, so
    no event is lost, but events created while it was away are stamped when it is back: the
    result says how many times that happened and for how long.
    """
    with contextlib.suppress(PermissionError):  # unprivileged: the default priority
        os.nice(-10)  # a stopwatch that is not descheduled behind what it times
    api = kubernetes.config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]
    batch = kubernetes.client.BatchV1Api(api)
    listed = batch.list_namespaced_job(namespace)
    if listed.items:
        raise SystemExit(f"namespace {namespace} already holds {len(listed.items)} Jobs")
    version = listed.metadata.resource_version
    times: list[float] = []
    resumes: list[float] = []
    ended: float | None = None
    while True:
        resp = batch.list_namespaced_job(
            namespace,
            watch=True,
            resource_version=version,
            timeout_seconds=3600,
            _headers={"Accept": METADATA_ONLY},
            _preload_content=False,
        )
        if ended is None:
            print("ready", flush=True)
        else:
            resumes.append(time.monotonic() - ended)
        for at, line in _lines(resp):
            event = json.loads(line)
            if event["type"] == "ERROR":
                raise SystemExit(f"the Job watch failed: {event['object'].get('message')}")
            version = event["object"]["metadata"]["resourceVersion"]
            if event["type"] == "ADDED":
                times.append(at)
                if len(times) == n:
                    return {"times": times, "resumes": len(resumes), "resume_s": sum(resumes)}
        ended = time.monotonic()


class JobWatch:
    """The watcher process for one namespace: start it before the run, `result()` after."""

    def __init__(self, kubeconfig: Path, namespace: str, n: int) -> None:
        self.n = n
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._job_watch", str(kubeconfig), namespace, str(n)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"the Job watch on {namespace} did not start (see its stderr)")

    def __enter__(self) -> JobWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def result(self, timeout: float = 120) -> dict[str, float]:
        """Creations/s, the seconds from the first to the last ADDED event, and the watch's
        resumes (count and seconds spent reconnecting).

        The rate is (n-1)/(last-first): n creations span n-1 gaps. Counting from the first
        creation rather than from the start of the run leaves out what differs between the two
        sides before they create (the controller starting and claiming rows; the client
        building its bodies), so the ratio compares creation throughput alone.
        """
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        if self.proc.returncode != 0:
            raise RuntimeError(f"the Job watch exited with {self.proc.returncode}")
        seen = json.loads(out)
        times = sorted(seen["times"])
        span = times[-1] - times[0]
        return {
            "per_s": (len(times) - 1) / span if span > 0 else float("nan"),
            "span_s": span,
            "watch_resumes": seen["resumes"],
            "watch_resume_s": seen["resume_s"],
        }


if __name__ == "__main__":
    print(json.dumps(watch_added(sys.argv[1], sys.argv[2], int(sys.argv[3]))), flush=True)
