"""The controller against the original worker pattern and against a bare Kubernetes client.

Starts its own local control plane (devcluster/controlplane.py), then:

  A. controller: N pending rows, the real `python -m controller` with a high max_concurrent and
     pods that succeed after kwok's default 500 ms. Measures claim-to-Job latency (p50/p95 from
     the controller's `audiojob_claim_to_job_seconds` histogram), rows completed per second,
     Job creations per second, peak RSS (VmHWM) and CPU seconds (utime+stime) of the process.
     DB statements per job come from a second, smaller run through the in-repo Hrana server,
     which counts every statement it executes (the embedded `file:` backend has no counter
     outside the process).
  B. original worker pattern: one claim per 3 s poll, one job at a time. Its throughput for N is
     computed (at most 1 job / 3 s), not waited for. A short real run of the controller at
     max_concurrent=1 and a 3 s poll is printed too; it beats 1/3 s because the controller
     claims again as soon as a Job ends, so it is not the original pattern.
  C. upper bound: one bare kubernetes client creating the same N Jobs sequentially in a fresh
     namespace, as fast as it can.

    python bench/bench_controller.py [--jobs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402

from controller.builders import build_job  # noqa: E402
from controller.settings import DbSettings, Settings  # noqa: E402
from controller.store import JobStore  # noqa: E402
from devcluster.controlplane import LocalCluster, free_port  # noqa: E402
from devcluster.hrana_server import HranaServer  # noqa: E402

ORIGINAL_POLL_SECONDS = 3.0
TERMINAL = ("complete", "failed", "cancelled")


# -- helpers ------------------------------------------------------------------------------------
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


def row_times(db_path: Path) -> list[tuple[str, int | None, int | None]]:
    with sqlite3.connect(db_path) as db:
        return list(db.execute("SELECT status, started_at, finished_at FROM audio_jobs"))


def terminal_count(db_path: Path) -> int:
    with sqlite3.connect(db_path, timeout=10) as db:
        q = "SELECT count(*) FROM audio_jobs WHERE status IN ('complete','failed','cancelled')"
        return int(db.execute(q).fetchone()[0])


def start_controller(
    cluster: LocalCluster, namespace: str, db_url: str, log: Path, **env: str
) -> tuple[subprocess.Popen[bytes], int]:
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
        "PYTHONPATH": str(REPO),
    }
    full |= env
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller"],
        env=full,
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def proc_usage(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds) of a live process."""
    hwm_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return hwm_kb / 1024, ticks / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def histogram_quantiles(text: str, name: str, qs: tuple[float, ...]) -> dict[float, float]:
    """Quantiles of a Prometheus histogram by linear interpolation within buckets."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
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


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return float("nan")


def wait_terminal(db_path: Path, n: int, timeout: float, proc: subprocess.Popen[bytes]) -> float:
    start = time.monotonic()
    while True:
        if terminal_count(db_path) >= n:
            return time.monotonic() - start
        if proc.poll() is not None:
            raise RuntimeError(f"controller exited with {proc.returncode}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"only {terminal_count(db_path)}/{n} rows terminal")
        time.sleep(0.25)


# -- the three measurements --------------------------------------------------------------------
def run_controller(cluster: LocalCluster, n: int, tmp: Path, max_concurrent: int) -> dict[str, Any]:
    ns = new_namespace(cluster)
    db = tmp / "a.db"
    insert_rows(db, n, "a")
    t0 = time.monotonic()
    proc, port = start_controller(
        cluster,
        ns,
        f"file:{db}",
        tmp / "controller-a.log",
        AUDIOJOB_CLAIM__MAX_CONCURRENT=str(max_concurrent),
        AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS="0.5",
        AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS="5",
    )
    try:
        wall = wait_terminal(db, n, timeout=600, proc=proc)
        rss, cpu = proc_usage(proc.pid)
        text = scrape(port)
    finally:
        stop(proc)
    del t0
    rows = row_times(db)
    done = [r for r in rows if r[0] == "complete"]
    first = min(r[1] for r in rows if r[1] is not None)
    last = max(r[2] for r in rows if r[2] is not None)
    batch = kubernetes.client.BatchV1Api(cluster.api_client())
    created = sorted(
        j.metadata.creation_timestamp.timestamp()
        for j in batch.list_namespaced_job(ns, limit=n + 10).items
    )
    span = max(created[-1] - created[0], 1.0) if created else float("nan")
    qs = histogram_quantiles(text, "audiojob_claim_to_job_seconds", (0.5, 0.95))
    return {
        "n": n,
        "completed": len(done),
        "wall_s": wall,
        "rows_per_s": len(done) / ((last - first) / 1000),
        "rows_per_s_wall": len(done) / wall,
        "jobs_created": len(created),
        "jobs_created_per_s": len(created) / span,
        "claim_to_job_p50_s": qs.get(0.5, float("nan")),
        "claim_to_job_p95_s": qs.get(0.95, float("nan")),
        "claims_total": metric_value(text, "audiojob_claims_total"),
        "peak_rss_mib": rss,
        "cpu_s": cpu,
        "namespace": ns,
    }


def run_statements(cluster: LocalCluster, n: int, tmp: Path, max_concurrent: int) -> dict[str, Any]:
    """Same run, smaller, through the counting Hrana server."""
    ns = new_namespace(cluster)
    db = tmp / "s.db"
    insert_rows(db, n, "s")
    server = HranaServer(str(db)).start()
    base = server.stats.statements
    proc, _ = start_controller(
        cluster,
        ns,
        server.url("http"),
        tmp / "controller-s.log",
        AUDIOJOB_CLAIM__MAX_CONCURRENT=str(max_concurrent),
        AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS="0.5",
        AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS="5",
    )
    try:
        wall = wait_terminal(db, n, timeout=300, proc=proc)
        used = server.stats.statements - base
    finally:
        stop(proc)
        server.stop()
    return {"n": n, "statements": used, "per_job": used / n, "wall_s": wall}


def run_original_shape(cluster: LocalCluster, n: int, tmp: Path) -> dict[str, Any]:
    """The controller held to one job at a time and a 3 s poll: a real check of the model."""
    ns = new_namespace(cluster)
    db = tmp / "b.db"
    insert_rows(db, n, "b")
    proc, _ = start_controller(
        cluster,
        ns,
        f"file:{db}",
        tmp / "controller-b.log",
        AUDIOJOB_CLAIM__MAX_CONCURRENT="1",
        AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS=str(ORIGINAL_POLL_SECONDS),
    )
    try:
        wait_terminal(db, n, timeout=120, proc=proc)
    finally:
        stop(proc)
    rows = row_times(db)
    first = min(r[1] for r in rows if r[1] is not None)
    last = max(r[2] for r in rows if r[2] is not None)
    return {"n": n, "rows_per_s": n / ((last - first) / 1000)}


def run_bare_client(cluster: LocalCluster, n: int) -> dict[str, Any]:
    ns = new_namespace(cluster)
    settings = Settings.model_validate(
        {"kube": {"namespace": ns}, "runner": {"service_account": "default"}}
    )
    batch = kubernetes.client.BatchV1Api(cluster.api_client())
    bodies = [
        build_job(
            job_id=f"c{i:05d}",
            job_type="ingest",
            attempt=1,
            trace_id=uuid.uuid4().hex,
            payload_json=json.dumps({"url": "https://example.com/a.mp3"}),
            settings=settings,
        )
        for i in range(n)
    ]
    start = time.monotonic()
    for body in bodies:
        batch.create_namespaced_job(ns, body)
    took = time.monotonic() - start
    return {"n": n, "seconds": took, "jobs_per_s": n / took}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--max-concurrent", type=int, default=200)
    parser.add_argument("--statement-jobs", type=int, default=100)
    parser.add_argument("--original-jobs", type=int, default=5)
    args = parser.parse_args()
    n = args.jobs
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-controller-") as tmp_s:
        tmp = Path(tmp_s)
        print(f"starting the local control plane ... (N={n})", flush=True)
        with LocalCluster() as cluster:
            print(f"  up in {time.monotonic() - began:.0f}s", flush=True)
            a = run_controller(cluster, n, tmp, args.max_concurrent)
            print(f"A controller: {json.dumps(a)}", flush=True)
            c = run_bare_client(cluster, n)
            print(f"C bare client: {json.dumps(c)}", flush=True)
            s = run_statements(cluster, min(args.statement_jobs, n), tmp, args.max_concurrent)
            print(f"A' statements: {json.dumps(s)}", flush=True)
            b_real = run_original_shape(cluster, args.original_jobs, tmp)
            print(f"B real short run: {json.dumps(b_real)}", flush=True)

    b_rate = 1 / ORIGINAL_POLL_SECONDS
    b_seconds = n * ORIGINAL_POLL_SECONDS
    rows = [
        ("rows", f"{n}", "", ""),
        ("throughput, rows completed/s", f"{a['rows_per_s']:.1f}", f"<= {b_rate:.2f}", ""),
        ("time for N rows, s", f"{a['wall_s']:.1f}", f">= {b_seconds:.0f}", ""),
        ("Job creations/s", f"{a['jobs_created_per_s']:.1f}", f"<= {b_rate:.2f}",
         f"{c['jobs_per_s']:.1f}"),
        ("claim-to-Job p50, ms", f"{a['claim_to_job_p50_s'] * 1000:.0f}", "", ""),
        ("claim-to-Job p95, ms", f"{a['claim_to_job_p95_s'] * 1000:.0f}", "", ""),
        ("controller peak RSS, MiB", f"{a['peak_rss_mib']:.0f}", "", ""),
        ("controller CPU, s", f"{a['cpu_s']:.1f}", "", ""),
        ("controller CPU ms/job", f"{a['cpu_s'] * 1000 / n:.1f}", "", ""),
        (f"DB statements/job (N={s['n']})", f"{s['per_job']:.1f}", "", ""),
    ]  # fmt: skip
    print()
    print(f"{'':34} {'controller':>12} {'original':>12} {'bare client':>12}")
    for label, *cols in rows:
        print(f"{label:34} " + " ".join(f"{v:>12}" for v in cols))
    print()
    print(
        f"controller at max_concurrent=1, poll {ORIGINAL_POLL_SECONDS:.0f}s ({b_real['n']} rows):"
        f" {b_real['rows_per_s']:.2f} rows/s (it claims again as soon as a Job ends, so this is"
        " not the 3 s-per-claim original pattern; the analytic figure is)"
    )
    print(f"controller vs original (analytic): {a['rows_per_s'] / b_rate:.0f}x throughput")
    print(
        f"controller vs itself at max_concurrent=1: {a['rows_per_s'] / b_real['rows_per_s']:.0f}x"
        " throughput"
    )
    print(
        f"controller Job creations vs bare client: "
        f"{a['jobs_created_per_s'] / c['jobs_per_s']:.2f}x"
        f" (rows completed/s vs bare creations/s: {a['rows_per_s'] / c['jobs_per_s']:.2f}x)"
    )
    print(f"total bench time: {time.monotonic() - began:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
