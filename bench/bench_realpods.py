"""Real audio jobs on the real node (issue 21, part 3; and part 5 in a pod): the controller on
the host, its Jobs' pods run by containerd + runc + the kubelet on this machine, with the image
from `make image`, the chart's runner identity and an output volume on this machine.

- Claim -> pod Running: JOBS short save jobs (a SHORT_SECONDS WAV -> MP3), at most
  MAX_CONCURRENT at a time. From the row's `started_at` (the claim, stamped by the controller)
  to the pod's first Running status seen on a watch, split into its steps (_pod_timeline.py):
  the pod first seen (the controller's Job, then the job controller's pod), bound to the node
  (the scheduler), the kubelet's sandbox (pause container, CNI), its container created and
  started, the kubelet observing it running (its PLEG relist, every 1 s) and the Running
  status back on the watch. Goal: p95 <= 3 s.
- Cancel -> ffmpeg gone: CANCELS long save jobs, one at a time, each cancelled (the row set to
  `cancelled`, as the web app does) while its ffmpeg transcodes; until that ffmpeg's host PID
  is gone. The controller runs with the product's default clocks (poll 3 s, heartbeat 5 s,
  grace 5 s; BENCH_REALPODS_FAST_CLOCKS=1 sets poll and heartbeat to 0.5 s as the e2e tests
  do), and the split is printed: the Job's deletion and the pod's seen on watches -> gone.
  Goal: p95 <= 1 s.
- The runner in a pod vs plain ffmpeg: one pod with the runner's own spec (controller.builders:
  image, service account and token, volumes, security context, env) whose command alternates
  plain ffmpeg and `python -m runner` on the same 10-minute WAV, REPEATS times, each timed in
  the container (wall clock and CPU, children included). Goal: <= 1.05x.

The real node is one per machine behind a lock (devcluster/node/lock.py): this holds it for
the few minutes it runs and releases it at the end, failed or not. BENCH_REALPODS_PARTS
(`running,cancel,ratio`) runs only some parts.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Run as a script (`make bench`): the repository root holds the packages, bench/ the helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kubernetes
from _goal import load, p, spread, verdict
from _pod_timeline import STEPS, PodWatch, node_steps, split

from controller.builders import build_job
from controller.settings import load_settings
from devcluster.controlplane import LocalCluster
from devcluster.image import image_name
from devcluster.realjobs import create_output_volume, node_processes, pod_pids, runner_env
from tests.chart.test_chart import CHART, RUNNER_SA, helm
from tests.e2e.conftest import Controller, Rows
from tests.helpers import wait_for

JOBS = int(os.environ.get("BENCH_REALPODS_JOBS", "50"))
MAX_CONCURRENT = 5
SHORT_SECONDS = 5
CANCELS = int(os.environ.get("BENCH_REALPODS_CANCELS", "10"))
FAST_CLOCKS = os.environ.get("BENCH_REALPODS_FAST_CLOCKS") == "1"
# The product's defaults (controller.settings), not the e2e tests' short clocks: a cancel is
# measured as a user with default settings sees it.
CLOCKS = {
    "AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS": "0.5" if FAST_CLOCKS else "3",
    "AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS": "0.5" if FAST_CLOCKS else "5",
    "AUDIOJOB_TIMEOUTS__CANCEL_GRACE_SECONDS": "5",
}
PARTS = set(os.environ.get("BENCH_REALPODS_PARTS", "running,cancel,ratio").split(","))
REPEATS = int(os.environ.get("BENCH_REALPODS_REPEATS", "3"))
LONG_SECONDS = 600
GOAL_RUNNING_P95 = 3.0
GOAL_CANCEL_P95 = 1.0
GOAL_RATIO = 1.05
OUTPUT = "/data/output"  # the runner's output directory in its pod (settings default)


def tone(path: Path, seconds: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}", "-ac", "2", str(path)],
        check=True, timeout=300,
    )  # fmt: skip


def new_namespace(core: kubernetes.client.CoreV1Api) -> str:
    name = f"bench-pods-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=90,
        message=f"default ServiceAccount in {name}",
    )
    return name


@contextlib.contextmanager
def real_node_session() -> Iterator[tuple[LocalCluster, Any, kubernetes.client.CoreV1Api, str]]:
    with LocalCluster() as cluster:
        node = cluster.start_real_node()
        wanted = f"docker.io/library/{image_name()}"
        if wanted not in node.containerd.images():
            raise SystemExit(f"the real node has no image {wanted}: run `make image` first")
        api = cluster.api_client()
        core = kubernetes.client.CoreV1Api(api)
        namespace = new_namespace(core)
        where = [f"--namespace={namespace}", f"--kubeconfig={cluster.kubeconfig}"]
        # The chart: the runner's ServiceAccount, its Role and the admission policy on its patches.
        helm("install", "aj", str(CHART), *where, "--set=database.url=libsql://example.invalid")
        try:
            yield cluster, node, core, namespace
        finally:
            helm("uninstall", "aj", *where)
            core.delete_namespace(namespace, propagation_policy="Background")
            api.close()


def finished_rows(db: Path, ids: list[str]) -> list[tuple[str, str, int | None]] | None:
    """(job_id, status, started_at ms) of every row once all have ended, else None."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        got = conn.execute("SELECT job_id, status, started_at FROM audio_jobs").fetchall()
    mine = [r for r in got if r[0] in set(ids)]
    done = len(mine) == len(ids) and all(r[1] in ("complete", "failed") for r in mine)
    return mine if done else None


def claim_to_running(
    rows: Rows, watch: PodWatch, controller: Controller, node: Any
) -> tuple[list[float], list[list[float | None]]]:
    """(claim -> pod Running, and its STEPS) per job."""
    ids = [f"short-{i:03d}" for i in range(JOBS)]
    for job_id in ids:
        rows.insert(job_id, "save", {"input": "in/short.wav", "format": "mp3"})
    controller.start(AUDIOJOB_CLAIM__MAX_CONCURRENT=str(MAX_CONCURRENT))
    t0 = time.monotonic()
    finished = wait_for(
        lambda: finished_rows(controller.db_path, ids),
        timeout=60 + JOBS * 20,
        interval=1.0,
        message=f"{JOBS} short jobs to finish",
    )
    elapsed = time.monotonic() - t0
    failed = [r for r in finished if r[1] != "complete"]
    assert not failed, [rows.get(r[0]) for r in failed[:3]]
    on_node = node_steps(node.log("containerd"), node.log("kubelet"))
    latencies, splits = [], []
    for job_id, _, started_at in finished:
        running = watch.running.get(job_id)
        assert running is not None and started_at is not None, (job_id, started_at)
        latencies.append(running - started_at / 1000)
        steps = on_node.get(watch.names.get(job_id, ""))
        splits.append(split(started_at / 1000, watch, job_id, steps))
    print(f"{JOBS} jobs of a {SHORT_SECONDS} s WAV -> MP3, {MAX_CONCURRENT} at a time: all "
          f"complete in {elapsed:.0f} s  [{load()}]")  # fmt: skip
    return latencies, splits


def ffmpeg_pids(uid: str) -> list[int]:
    return node_processes("ffmpeg", pids=pod_pids(uid))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def cancels(rows: Rows, watch: PodWatch) -> tuple[list[float], list[float], list[float]]:
    """(row cancelled -> ffmpeg gone, row cancelled -> Job deletion seen, pod deletion seen ->
    ffmpeg gone) per cancelled job."""
    total, to_job, after_delete = [], [], []
    for i in range(CANCELS):
        job_id = f"cancel-{i:02d}"
        rows.insert(job_id, "save", {"input": "in/long.wav", "format": "mp3"})
        pids = wait_for(
            lambda j=job_id: (
                rows.get(j).stage == "rendering" and (uid := watch.uids.get(j)) and ffmpeg_pids(uid)
            ),
            timeout=180,
            interval=0.1,
            message=f"{job_id}'s ffmpeg to be transcoding in its pod",
        )
        t0 = time.time()
        assert rows.cancel(job_id)
        while any(alive(pid) for pid in pids):
            if time.time() - t0 > 30:
                raise AssertionError(f"{job_id}'s ffmpeg still running 30 s after the cancel")
            time.sleep(0.01)
        gone = time.time()
        total.append(gone - t0)
        deleted = wait_for(lambda j=job_id: watch.deleted.get(j), timeout=30, message="deletion")
        after_delete.append(gone - deleted)
        job = wait_for(lambda j=job_id: watch.job_deleted.get(j), timeout=30, message="Job gone")
        to_job.append(job - t0)
        rows.wait_status(job_id, "cancelled", timeout=60)
    return total, to_job, after_delete


TIMER = r"""
import json, os, resource, subprocess, sys, time
def run(argv, env=None):
    b = resource.getrusage(resource.RUSAGE_CHILDREN); t = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True)
    wall = time.perf_counter() - t; a = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{argv[0]} failed: {done.returncode} {done.stderr.decode()[-2000:]}")
    return wall, a.ru_utime - b.ru_utime + a.ru_stime - b.ru_stime
for name in sys.argv[2:]:
    source = f"/data/output/in/{name}"
    for i in range(int(sys.argv[1])):
        plain = run(["ffmpeg", "-v", "error", "-y", "-i", source, "-c:a", "libmp3lame",
                     "-b:a", "192k", "-ar", "44100", "-f", "mp3", "/tmp/plain.mp3"])
        env = dict(os.environ, AUDIOJOB_ID=f"ratio-{i}",
                   AUDIOJOB_PAYLOAD=json.dumps({"input": f"in/{name}", "format": "mp3"}),
                   AUDIOJOB_TERMINATION_LOG="/tmp/termination-log")
        runner = run([sys.executable, "-m", "runner"], env)
        print(json.dumps({"input": name, "plain": plain, "runner": runner}), flush=True)
"""


def in_pod_ratio(
    cluster: LocalCluster, node: Any, core: kubernetes.client.CoreV1Api, namespace: str, claim: str
) -> list[dict[str, Any]]:
    env = runner_env(node=node, claim=claim, service_account=RUNNER_SA)
    saved = dict(os.environ)
    os.environ.update(env | {"AUDIOJOB_KUBE__NAMESPACE": namespace})
    try:
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    job = build_job(
        job_id="ratio",
        job_type="save",
        attempt=1,
        trace_id="-",
        payload_json="{}",
        settings=settings,
    )
    template = job["spec"]["template"]
    template["metadata"]["labels"] = {"bench": "ratio"}  # not the controller's to manage
    container = template["spec"]["containers"][0]
    container["command"] = ["python", "-c", TIMER, str(REPEATS), "long.wav", "short.wav"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ratio"} | template["metadata"]}
    pod["spec"] = template["spec"]
    core.create_namespaced_pod(namespace, pod)
    phase = wait_for(
        lambda: (
            (ph := core.read_namespaced_pod("ratio", namespace).status.phase)
            in ("Succeeded", "Failed")
            and ph
        ),
        timeout=60 + REPEATS * 120,
        interval=1.0,
        message="the ratio pod to finish",
    )
    logs = core.read_namespaced_pod_log("ratio", namespace, container="runner")
    assert phase == "Succeeded", logs[-3000:]
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


def report_running(running: list[float], splits: list[list[float | None]]) -> None:
    print(f"claim -> pod Running: {spread(running)}")
    for i, name in enumerate(STEPS):
        values = [v[i] for v in splits if v[i] is not None]
        if values:
            print(f"  {name:50s} {spread(values)}")
    # The steps of the slowest pods: what the p95 is made of.
    slow = sorted(zip(running, splits, strict=True), key=lambda r: r[0])[-3:]
    for total, steps in slow:
        parts = " + ".join("?" if v is None else f"{v:.2f}" for v in steps)
        print(f"  a slow one: {total:.2f} s = {parts}")
    print(verdict("claim -> pod Running, p95", p(running, 0.95), GOAL_RUNNING_P95, " s"))


def report_cancels(cancelled: list[float], to_job: list[float], after: list[float]) -> None:
    clocks = "0.5 s poll and heartbeat" if FAST_CLOCKS else "default clocks"
    print(f"cancel -> ffmpeg gone ({clocks}): {spread(cancelled)}")
    print(f"  of which cancel -> the Job's deletion seen: {spread(to_job)}")
    print(f"  of which the pod's deletion seen -> ffmpeg gone: {spread(after)}")
    print(verdict("cancel -> ffmpeg gone, p95", p(cancelled, 0.95), GOAL_CANCEL_P95, " s"))


def report_ratio(runs: list[dict[str, Any]]) -> None:
    for name, seconds in (("long.wav", LONG_SECONDS), ("short.wav", SHORT_SECONDS)):
        mine = [r for r in runs if r["input"] == name]
        pw = statistics.median(r["plain"][0] for r in mine)
        rw = statistics.median(r["runner"][0] for r in mine)
        pc = statistics.median(r["plain"][1] for r in mine)
        rc = statistics.median(r["runner"][1] for r in mine)
        print(f"in a pod, {seconds} s WAV -> 192k MP3 (median of {len(mine)} alternating): plain "
              f"ffmpeg {pw:.3f} s, runner {rw:.3f} s (+{rw - pw:.3f} s); CPU {pc:.2f} s vs "
              f"{rc:.2f} s ({rc / pc:.3f}x)")  # fmt: skip
        if name == "long.wav":
            print(verdict("runner in a pod / plain ffmpeg (wall clock)", rw / pw, GOAL_RATIO, "x"))
            print(verdict("runner in a pod / plain ffmpeg (CPU time)", rc / pc, GOAL_RATIO, "x"))


def main() -> int:
    # Every CRI call in containerd's log, with its time: the steps of a pod's start.
    os.environ.setdefault("AUDIOJOB_CONTAINERD_LOG_LEVEL", "info")
    with tempfile.TemporaryDirectory(prefix="bench-realpods-") as tmp:
        root = Path(tmp)
        print(f"-- real pods on the real node  [{load()}]")
        with real_node_session() as (cluster, node, core, namespace):
            volume = create_output_volume(cluster, namespace=namespace, host_dir=root / "output")
            tone(volume.host_dir / "in" / "short.wav", SHORT_SECONDS)
            tone(volume.host_dir / "in" / "long.wav", LONG_SECONDS)
            rows = Rows(root / "jobs.db")
            controller = Controller(
                cluster,
                namespace,
                root / "jobs.db",
                root / "controller.log",
                env=runner_env(node=node, claim=volume.claim, service_account=RUNNER_SA) | CLOCKS,
            )
            batch = kubernetes.client.BatchV1Api(core.api_client)
            watch = PodWatch(core, batch, namespace)
            try:
                if "running" in PARTS:
                    report_running(*claim_to_running(rows, watch, controller, node))
                if "cancel" in PARTS:
                    if controller.proc is None:
                        controller.start(AUDIOJOB_CLAIM__MAX_CONCURRENT=str(MAX_CONCURRENT))
                    report_cancels(*cancels(rows, watch))
            finally:
                watch.stop()
                if controller.proc is not None:
                    controller.stop()
            if "ratio" in PARTS:
                report_ratio(in_pod_ratio(cluster, node, core, namespace, volume.claim))
            cluster.kubectl("delete", "pv", volume.pv, "--wait=false", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
