"""The controller against a bare Kubernetes client, against itself, and against the original
worker pattern, all on one local control plane (devcluster/controlplane.py) in one run:

  A. N rows (default 1,000) with max_concurrent N and pods that run 20 s, so all N attempts are
     in flight at once: Job creations/s (first to last ADDED event on a watch of the run's
     namespace, bench/_job_watch.py), peak RSS (VmHWM) and CPU (utime+stime) of the controller
     process, Kubernetes API requests per job (the controller's `audiojob_api_requests_total`),
     claim-to-Job p50/p95; every row must end complete at attempt 1 with one Job.
  C. baseline, run before and after A and averaged: a bare client (the official kubernetes
     package, as the controller used before it had its own aiohttp client) creating the same N
     Jobs with the same concurrency as the controller's writes
     (`AUDIOJOB_KUBE__WRITE_CONCURRENCY`, 16 threads), its creations/s measured by the same
     watch.
  S. DB statements per job: a smaller run through the in-repo Hrana server, which counts every
     statement it executes.
  L. 5,000 rows with max_concurrent 1,000 and 1 s pods, the default clocks (5 min to start,
     10 min to run) and enough fake nodes for 1,000 pods at once: time, rows/s, peak RSS,
     lost rows (not complete) and duplicate attempts (attempt > 1 or two Jobs for one row).
  M. three installations (three namespaces, one database file) draining the same number of
     rows as one installation: aggregate rows/s against one.
  B. the original worker pattern: one claim per 3 s poll, one job at a time, computed.

    python bench/bench_controller.py [--jobs N] [--large N] [--shared N]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402

from bench import _plots as plots  # noqa: E402
from bench._job_watch import JobWatch  # noqa: E402
from bench._runs import (  # noqa: E402
    Sample,
    check_once,
    histogram_quantiles,
    insert_rows,
    new_namespace,
    proc_usage,
    scrape,
    start_controller,
    stop,
    stop_all,
    wait_terminal,
)
from controller.builders import build_job  # noqa: E402
from controller.settings import Settings  # noqa: E402
from devcluster.controlplane import LocalCluster  # noqa: E402
from devcluster.hrana_server import HranaServer  # noqa: E402

ORIGINAL_POLL_SECONDS = 3.0
TERMINAL = ("complete", "failed", "cancelled")


# -- the measurements --------------------------------------------------------------------------
SIM_DURATION = "audiojob.dev/sim-duration"


def start_bench_controller(
    cluster: LocalCluster,
    namespace: str,
    db_url: str,
    log: Path,
    *,
    max_concurrent: int,
    pod_seconds: int | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """A controller with the bench's fast clocks; kwok pods that run `pod_seconds`."""
    env = {
        "AUDIOJOB_CLAIM__MAX_CONCURRENT": str(max_concurrent),
        "AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS": "0.5",
        "AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS": "5",
    }
    if pod_seconds is not None:
        env["AUDIOJOB_RUNNER__POD_ANNOTATIONS"] = json.dumps({SIM_DURATION: f"{pod_seconds}s"})
    return start_controller(cluster, namespace, db_url, log, **env)


def drain(
    cluster: LocalCluster,
    namespace: str,
    db: Path,
    log: Path,
    *,
    n: int,
    max_concurrent: int,
    pod_seconds: int,
    samples: list[Sample] | None = None,
) -> tuple[float, float, float, str]:
    """(seconds until all n rows are terminal, peak RSS MiB, CPU s, /metrics) of one controller
    on a database file; its progress and RSS over time go to `samples`."""
    proc, port = start_bench_controller(
        cluster,
        namespace,
        f"file:{db}",
        log,
        max_concurrent=max_concurrent,
        pod_seconds=pod_seconds,
    )
    try:
        wall = wait_terminal(db, n, timeout=1800, proc=proc, samples=samples)
        rss, cpu = proc_usage(proc.pid)
        return wall, rss, cpu, scrape(port)
    finally:
        stop(proc)


def run_in_flight(cluster: LocalCluster, n: int, tmp: Path) -> dict[str, Any]:
    ns = new_namespace(cluster)
    db = tmp / "a.db"
    insert_rows(db, n, "a")
    with JobWatch(cluster.kubeconfig, ns, n) as watch:
        wall, rss, cpu, text = drain(
            cluster, ns, db, tmp / "controller-a.log", n=n, max_concurrent=n, pod_seconds=20
        )
        created = watch.result()
    checked = check_once(db, cluster, [ns])
    qs = histogram_quantiles(text, "audiojob_claim_to_job_seconds", (0.5, 0.95))
    requests = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("audiojob_api_requests_total{")
    )
    return {
        "n": n,
        "wall_s": wall,
        "jobs_created": checked.pop("jobs"),
        "jobs_created_per_s": created.pop("per_s"),
        "creation_span_s": created.pop("span_s"),
        **created,
        "claim_to_job_p50_s": qs.get(0.5, float("nan")),
        "claim_to_job_p95_s": qs.get(0.95, float("nan")),
        "peak_rss_mib": rss,
        "cpu_s": cpu,
        "api_requests": requests,
        **checked,
    }


def run_bare_client(cluster: LocalCluster, n: int, concurrency: int) -> dict[str, Any]:
    ns = new_namespace(cluster)
    settings = Settings.model_validate(
        {"kube": {"namespace": ns}, "runner": {"service_account": "default"}}
    )
    api = cluster.api_client()
    # Same as the controller: a pooled connection per concurrent call.
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = concurrency
    batch = kubernetes.client.BatchV1Api(api)
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
    with JobWatch(cluster.kubeconfig, ns, n) as watch:
        start = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda body: batch.create_namespaced_job(ns, body), bodies))
        took = time.monotonic() - start
        created = watch.result()
    return {
        "n": n,
        "concurrency": concurrency,
        "seconds": took,
        "jobs_per_s": created.pop("per_s"),
        "creation_span_s": created.pop("span_s"),
        **created,
    }


def run_statements(cluster: LocalCluster, n: int, tmp: Path) -> dict[str, Any]:
    """A smaller run through the counting Hrana server."""
    ns = new_namespace(cluster)
    db = tmp / "s.db"
    insert_rows(db, n, "s")
    server = HranaServer(str(db)).start()
    base = server.stats.statements
    proc, _ = start_bench_controller(
        cluster,
        ns,
        server.url("http"),
        tmp / "controller-s.log",
        max_concurrent=n,
    )
    try:
        wall = wait_terminal(db, n, timeout=300, proc=proc)
        used = server.stats.statements - base
    finally:
        stop(proc)
        server.stop()
    return {"n": n, "statements": used, "per_job": used / n, "wall_s": wall}


def run_large(cluster: LocalCluster, n: int, tmp: Path, max_concurrent: int) -> dict[str, Any]:
    ns = new_namespace(cluster)
    db = tmp / "l.db"
    insert_rows(db, n, "l")
    samples: list[Sample] = []
    wall, rss, cpu, _ = drain(
        cluster, ns, db, tmp / "controller-l.log", n=n, max_concurrent=max_concurrent,
        pod_seconds=1, samples=samples,
    )  # fmt: skip
    title = f"{n:,} rows, max_concurrent {max_concurrent:,}, 1 s pods"
    for path in plots.write("large", samples, plots.claim_to_running_seconds(db), title):
        print(f"  wrote {path.relative_to(REPO)}", flush=True)
    return {
        "n": n,
        "max_concurrent": max_concurrent,
        "wall_s": wall,
        "rows_per_s": n / wall,
        "peak_rss_mib": rss,
        "cpu_s": cpu,
        **check_once(db, cluster, [ns]),
    }


def run_installations(cluster: LocalCluster, n: int, tmp: Path, count: int) -> dict[str, Any]:
    """`count` installations (one namespace each) sharing one database file."""
    db = tmp / f"m{count}.db"
    insert_rows(db, n, "m")
    spaces = [new_namespace(cluster) for _ in range(count)]
    procs = [
        start_bench_controller(
            cluster,
            ns,
            f"file:{db}",
            tmp / f"controller-m{count}-{i}.log",
            max_concurrent=100,
            pod_seconds=1,
        )[0]
        for i, ns in enumerate(spaces)
    ]
    try:
        wall = wait_terminal(db, n, timeout=1800, proc=procs[0])
    finally:
        stop_all(procs)
    with sqlite3.connect(db) as c:
        owners = dict(c.execute("SELECT claimed_by, count(*) FROM audio_jobs GROUP BY 1"))
    return {
        "n": n,
        "installations": count,
        "wall_s": wall,
        "rows_per_s": n / wall,
        "rows_per_installation": sorted(owners.values()),
        **check_once(db, cluster, spaces),
    }


BEFORE = {"creations_ratio": 0.50, "rss_mib": 336, "cpu_ms_per_job": 33, "statements": 4.1}
"""Issue 12's starting point: the engine before it was split, the sequential bare client."""
KOPF_WATCHES = {"creations_ratio": 0.70, "rss_mib": 186, "cpu_ms_per_job": 24.8}
"""The split engine still fed by kopf's watch handlers and creating Jobs through the official
client in threads (the run before controller/watch.py and the aiohttp client)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--statement-jobs", type=int, default=200)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--large-concurrent", type=int, default=1000)
    parser.add_argument("--shared", type=int, default=600)
    parser.add_argument("--write-concurrency", type=int, default=16)
    parser.add_argument("--only", default="ACSLM", help="which runs, e.g. L or ACS")
    args = parser.parse_args()
    n = args.jobs
    began = time.monotonic()
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-controller-") as tmp_s:
        tmp = Path(tmp_s)
        print(f"starting the local control plane ... (N={n})", flush=True)
        # Enough fake nodes (110 pods each) for every attempt in flight to run at once: with
        # kwok's default three, pods of the large run waited Pending past their deadline.
        nodes = max(3, -(-max(n, args.large_concurrent) // 100))
        with LocalCluster(nodes=nodes) as cluster:
            print(f"  up in {time.monotonic() - began:.0f}s", flush=True)
            # The baseline runs before and after the controller and is averaged: on a shared
            # machine the load drifts between runs, and one side alone would carry it.
            plan = {
                "C1": lambda: run_bare_client(cluster, n, args.write_concurrency),
                "A": lambda: run_in_flight(cluster, n, tmp),
                "C2": lambda: run_bare_client(cluster, n, args.write_concurrency),
                "S": lambda: run_statements(cluster, min(args.statement_jobs, n), tmp),
                "L": lambda: run_large(cluster, args.large, tmp, args.large_concurrent),
                "M1": lambda: run_installations(cluster, args.shared, tmp, 1),
                "M3": lambda: run_installations(cluster, args.shared, tmp, 3),
            }
            for key, run in plan.items():
                if key[0] in args.only:
                    runs[key] = run()
                    print(f"{key}: {json.dumps(runs[key])}", flush=True)
    print()
    report(runs, n, args.shared)
    print(f"total bench time: {time.monotonic() - began:.0f}s")
    return 0


def report(runs: dict[str, Any], n: int, shared: int) -> None:
    if "A" in runs and "C1" in runs:
        a, c1, c2 = runs["A"], runs["C1"], runs["C2"]
        baseline = (c1["jobs_per_s"] + c2["jobs_per_s"]) / 2
        ratio = a["jobs_created_per_s"] / baseline
        print(
            f"Job creations/s (first to last ADDED event on a Job watch): controller"
            f" {a['jobs_created_per_s']:.1f} ({n} in {a['creation_span_s']:.2f} s), bare client"
            f" at the same concurrency {baseline:.1f} (mean of the runs before and after:"
            f" {c1['jobs_per_s']:.1f} in {c1['creation_span_s']:.2f} s,"
            f" {c2['jobs_per_s']:.1f} in {c2['creation_span_s']:.2f} s): {ratio:.2f}x"
            f" (before: {BEFORE['creations_ratio']:.2f}x; with kopf's watches"
            f" {KOPF_WATCHES['creations_ratio']:.2f}x; goal >= 0.9x)"
        )
    if "A" in runs:
        a = runs["A"]
        print(
            f"{n} in flight: peak RSS {a['peak_rss_mib']:.0f} MiB (before {BEFORE['rss_mib']};"
            f" with kopf's watches {KOPF_WATCHES['rss_mib']}; goal <= 150), CPU"
            f" {a['cpu_s'] * 1000 / n:.1f} ms/job (before {BEFORE['cpu_ms_per_job']}; with"
            f" kopf's watches {KOPF_WATCHES['cpu_ms_per_job']}; goal <= 10), API requests/job"
            f" {a['api_requests'] / n:.2f}, claim-to-Job p50/p95"
            f" {a['claim_to_job_p50_s'] * 1000:.0f}/{a['claim_to_job_p95_s'] * 1000:.0f} ms,"
            f" not complete {a['lost']}, attempt>1 {a['attempt_gt_1']},"
            f" extra Jobs {a['extra_jobs']}"
        )
    if "S" in runs:
        s = runs["S"]
        print(
            f"DB statements/job (N={s['n']}): {s['per_job']:.2f} (before"
            f" {BEFORE['statements']}; goal <= 3)"
        )
    if "L" in runs:
        big = runs["L"]
        print(
            f"{big['n']} rows, max_concurrent {big['max_concurrent']}: {big['wall_s']:.0f} s"
            f" ({big['rows_per_s']:.1f} rows/s), peak RSS {big['peak_rss_mib']:.0f} MiB,"
            f" CPU {big['cpu_s'] * 1000 / big['n']:.1f} ms/job, not complete {big['lost']},"
            f" attempt>1 {big['attempt_gt_1']}, extra Jobs {big['extra_jobs']}"
        )
    if "M1" in runs and "M3" in runs:
        one, three = runs["M1"], runs["M3"]
        print(
            f"{shared} rows, three installations vs one: {three['rows_per_s']:.1f} vs"
            f" {one['rows_per_s']:.1f} rows/s ({three['rows_per_s'] / one['rows_per_s']:.2f}x),"
            f" rows per installation {three['rows_per_installation']}, not complete"
            f" {three['lost']}, attempt>1 {three['attempt_gt_1']}, extra Jobs"
            f" {three['extra_jobs']}"
        )
    print(
        f"original worker pattern (one claim per {ORIGINAL_POLL_SECONDS:.0f} s poll):"
        f" {1 / ORIGINAL_POLL_SECONDS:.2f} rows/s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
