"""Running the controller on the local control plane, for bench_controller.py: namespaces,
rows, processes and what they measured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from controller.settings import DbSettings
from controller.store import JobStore
from devcluster.controlplane import LocalCluster, free_port
from devcluster.procs import terminate

REPO = Path(__file__).resolve().parents[1]


def settle(cluster: LocalCluster, timeout: float = 300) -> float:
    """Wait until no pod in the cluster is Pending or Running (a run's Jobs leave up to 1,000
    pods for kwok to start and end after it is measured: the next run would queue behind
    them); seconds waited."""
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    start = time.monotonic()
    busy = "status.phase!=Succeeded,status.phase!=Failed"
    while time.monotonic() - start < timeout:
        if not core.list_pod_for_all_namespaces(field_selector=busy, limit=1).items:
            break
        time.sleep(2)
    return time.monotonic() - start


def new_namespace(cluster: LocalCluster) -> str:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    name = f"bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            return name
        except kubernetes.client.ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def _with_store(url: str, fn: Any) -> Any:
    store = await JobStore.open(DbSettings(url=url))
    try:
        return await fn(store)
    finally:
        await store.close()


def insert_rows(db_path: Path, n: int, prefix: str) -> None:
    async def go(store: JobStore) -> None:
        for i in range(n):
            await store.insert(
                job_id=f"{prefix}{i:05d}",
                type="ingest",
                payload={"url": "https://example.com/a.mp3"},
            )

    asyncio.run(_with_store(f"file:{db_path}", go))


def terminal_count(db_path: Path) -> int:
    with sqlite3.connect(db_path, timeout=10) as db:
        q = "SELECT count(*) FROM audio_jobs WHERE status IN ('complete','failed','cancelled')"
        return int(db.execute(q).fetchone()[0])


def pending_count(db_path: Path) -> int:
    with sqlite3.connect(db_path, timeout=10) as db:
        return int(
            db.execute("SELECT count(*) FROM audio_jobs WHERE status = 'pending'").fetchone()[0]
        )


def failed_count(db_path: Path) -> int:
    with sqlite3.connect(db_path, timeout=10) as db:
        q = "SELECT count(*) FROM audio_jobs WHERE status IN ('failed', 'cancelled')"
        return int(db.execute(q).fetchone()[0])


def start_controller(
    cluster: LocalCluster,
    namespace: str,
    db_url: str,
    log: Path,
    *,
    src: Path = REPO,
    **env: str,
) -> tuple[subprocess.Popen[bytes], int]:
    """`src`: the tree whose `controller` package runs (bench_controller.py --before)."""
    port = free_port()
    full = os.environ | {
        "KUBECONFIG": str(cluster.kubeconfig),
        "TURSO_DATABASE_URL": db_url,
        "AUDIOJOB_KUBE__NAMESPACE": namespace,
        "AUDIOJOB_METRICS__PORT": str(port),
        "AUDIOJOB_METRICS__HOST": "127.0.0.1",
        "AUDIOJOB_RUNNER__SERVICE_ACCOUNT": "default",
        "AUDIOJOB_TIMEOUTS__RETRY_BACKOFF_SECONDS": "0",
        "AUDIOJOB_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(src),
    }
    full |= env
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller"],
        env=full,
        cwd=src,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, port


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    terminate(proc, timeout=30)


def proc_usage(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds) of a live process."""
    hwm_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return hwm_kb / 1024, ticks / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of the main thread, of all the others) of a live process: the controller's
    main thread runs the event loop, the others the database file's statements and DNS."""
    main = rest = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if task.name == str(pid):
                main += seconds
            else:
                rest += seconds
    return main, rest


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric_sum(text: str, name: str) -> float:
    """The sum of a metric's samples: `name` is a metric name, or a name with its first
    label(s) as the exposition writes them (`x_total{kind="claim"`, closing brace optional)."""
    head = name.rstrip("}")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(head) and line[len(head)] in "{ ,}":
            total += float(line.split()[-1])
    return total


def histogram_quantiles(
    text: str, name: str, qs: tuple[float, ...], labels: str = ""
) -> dict[float, float]:
    """Quantiles of a Prometheus histogram by linear interpolation within buckets; `labels`
    picks one series (`verb="create"`)."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket") and labels in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out = {}
    for q in qs:
        target = q * total
        prev_le, prev_count = 0.0, 0.0
        for le, count in buckets:
            if count >= target:
                if le == float("inf"):
                    out[q] = prev_le
                else:
                    frac = (target - prev_count) / (count - prev_count) if count > prev_count else 0
                    out[q] = prev_le + (le - prev_le) * frac
                break
            prev_le, prev_count = le, count
    return out


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a run: seconds since its start, rows terminal, the controller's RSS."""

    t: float
    terminal: int
    rss_mib: float


def rss_slope(samples: list[Sample], *, start: int, end: int) -> tuple[float, tuple[float, float]]:
    """RSS growth in MiB per 1,000 rows finished (least squares over the samples taken while
    between `start` and `end` rows were terminal), and the RSS at the window's two ends."""
    window = [s for s in samples if start <= s.terminal <= end]
    if len(window) < 2 or window[-1].terminal == window[0].terminal:
        return float("nan"), (float("nan"), float("nan"))
    xs = [s.terminal / 1000 for s in window]
    ys = [s.rss_mib for s in window]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return slope, (ys[0], ys[-1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_terminal(
    db_path: Path,
    n: int,
    timeout: float,
    proc: subprocess.Popen[bytes],
    samples: list[Sample] | None = None,
    *,
    budget: float | None = None,
) -> float:
    """Seconds until `n` rows are terminal, or until `budget` seconds have passed; each look
    is appended to `samples` (the plots)."""
    start = time.monotonic()
    while True:
        done = terminal_count(db_path)
        if samples is not None:
            samples.append(Sample(time.monotonic() - start, done, rss_mib(proc.pid)))
        if done >= n or (budget is not None and time.monotonic() - start > budget):
            return time.monotonic() - start
        if proc.poll() is not None:
            raise RuntimeError(f"controller exited with {proc.returncode}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"only {terminal_count(db_path)}/{n} rows terminal")
        time.sleep(0.25)


def check_once(db_path: Path, cluster: LocalCluster, namespaces: list[str]) -> dict[str, int]:
    """Rows not complete, rows past attempt 1, Jobs, and rows with more than one Job."""
    with sqlite3.connect(db_path, timeout=10) as db:
        lost = db.execute("SELECT count(*) FROM audio_jobs WHERE status != 'complete'").fetchone()
        again = db.execute("SELECT count(*) FROM audio_jobs WHERE attempt > 1").fetchone()
    batch = kubernetes.client.BatchV1Api(cluster.api_client())
    seen: dict[str, int] = {}
    for ns in namespaces:
        for j in batch.list_namespaced_job(ns).items:
            jid = j.metadata.annotations["audiojob.dev/job-id"]
            seen[jid] = seen.get(jid, 0) + 1
    return {
        "lost": int(lost[0]),
        "attempt_gt_1": int(again[0]),
        "jobs": sum(seen.values()),
        "extra_jobs": sum(n - 1 for n in seen.values()),
    }
