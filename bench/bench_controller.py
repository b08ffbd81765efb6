"""The controller against a bare Kubernetes client, against itself, and against the original
worker pattern, all on one local control plane (devcluster/controlplane.py) in one run:

  A. N rows (default 1,000) with max_concurrent N and pods that run 20 s, so all N attempts are
     in flight at once: Job creations/s (from the Jobs' creation times), peak RSS (VmHWM) and
     CPU (utime+stime) of the controller process, Kubernetes API requests per job (the
     controller's `audiojob_api_requests_total`), claim-to-Job p50/p95; every row must end
     complete at attempt 1 with one Job.
  C. baseline: a bare kubernetes client creating the same N Jobs with the same concurrency as
     the controller's writes (`AUDIOJOB_KUBE__WRITE_CONCURRENCY`, 16 threads).
  S. DB statements per job: a smaller run through the in-repo Hrana server, which counts every
     statement it executes.
  L. 5,000 rows with max_concurrent 1,000 and 1 s pods: time, rows/s, peak RSS, lost rows
     (not complete) and duplicate attempts (attempt > 1 or two Jobs for one row).
  M. three installations (three namespaces, one database file) draining the same number of
     rows as one installation: aggregate rows/s against one.
  B. the original worker pattern: one claim per 3 s poll, one job at a time, computed.

    python bench/bench_controller.py [--jobs N] [--large N] [--shared N]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
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

from bench._runs import (  # noqa: E402
    check_once,
    creation_rate,
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


def run_in_flight(cluster: LocalCluster, n: int, tmp: Path) -> dict[str, Any]:
    ns = new_namespace(cluster)
    db = tmp / "a.db"
    insert_rows(db, n, "a")
    proc, port = start_controller(
        cluster,
        ns,
        f"file:{db}",
        tmp / "controller-a.log",
        AUDIOJOB_CLAIM__MAX_CONCURRENT=str(n),
        AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS="0.5",
        AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS="5",
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps({SIM_DURATION: "20s"}),
    )
    try:
        wall = wait_terminal(db, n, timeout=900, proc=proc)
        rss, cpu = proc_usage(proc.pid)
        text = scrape(port)
    finally:
        stop(proc)
    jobs, rate = creation_rate(cluster, ns)
    qs = histogram_quantiles(text, "audiojob_claim_to_job_seconds", (0.5, 0.95))
    requests = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("audiojob_api_requests_total{")
    )
    return {
        "n": n,
        "wall_s": wall,
        "jobs_created": jobs,
        "jobs_created_per_s": rate,
        "claim_to_job_p50_s": qs.get(0.5, float("nan")),
        "claim_to_job_p95_s": qs.get(0.95, float("nan")),
        "peak_rss_mib": rss,
        "cpu_s": cpu,
        "api_requests": requests,
        **check_once(db, cluster, [ns]),
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
    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda body: batch.create_namespaced_job(ns, body), bodies))
    took = time.monotonic() - start
    _, rate = creation_rate(cluster, ns)
    return {"n": n, "concurrency": concurrency, "seconds": took, "jobs_per_s": rate}


def run_statements(cluster: LocalCluster, n: int, tmp: Path) -> dict[str, Any]:
    """A smaller run through the counting Hrana server."""
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
        AUDIOJOB_CLAIM__MAX_CONCURRENT=str(n),
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


def run_large(cluster: LocalCluster, n: int, tmp: Path, max_concurrent: int) -> dict[str, Any]:
    ns = new_namespace(cluster)
    db = tmp / "l.db"
    insert_rows(db, n, "l")
    proc, _ = start_controller(
        cluster,
        ns,
        f"file:{db}",
        tmp / "controller-l.log",
        AUDIOJOB_CLAIM__MAX_CONCURRENT=str(max_concurrent),
        AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS="0.5",
        AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS="5",
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps({SIM_DURATION: "1s"}),
    )
    try:
        wall = wait_terminal(db, n, timeout=3600, proc=proc)
        rss, cpu = proc_usage(proc.pid)
    finally:
        stop(proc)
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
        start_controller(
            cluster,
            ns,
            f"file:{db}",
            tmp / f"controller-m{count}-{i}.log",
            AUDIOJOB_CLAIM__MAX_CONCURRENT="100",
            AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS="0.5",
            AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS="5",
            AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps({SIM_DURATION: "1s"}),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--statement-jobs", type=int, default=200)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--large-concurrent", type=int, default=1000)
    parser.add_argument("--shared", type=int, default=600)
    parser.add_argument("--write-concurrency", type=int, default=16)
    args = parser.parse_args()
    n = args.jobs
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-controller-") as tmp_s:
        tmp = Path(tmp_s)
        print(f"starting the local control plane ... (N={n})", flush=True)
        with LocalCluster() as cluster:
            print(f"  up in {time.monotonic() - began:.0f}s", flush=True)
            a = run_in_flight(cluster, n, tmp)
            print(f"A in flight: {json.dumps(a)}", flush=True)
            c = run_bare_client(cluster, n, args.write_concurrency)
            print(f"C bare client: {json.dumps(c)}", flush=True)
            s = run_statements(cluster, min(args.statement_jobs, n), tmp)
            print(f"S statements: {json.dumps(s)}", flush=True)
            big = run_large(cluster, args.large, tmp, args.large_concurrent)
            print(f"L large: {json.dumps(big)}", flush=True)
            one = run_installations(cluster, args.shared, tmp, 1)
            print(f"M one installation: {json.dumps(one)}", flush=True)
            three = run_installations(cluster, args.shared, tmp, 3)
            print(f"M three installations: {json.dumps(three)}", flush=True)

    ratio = a["jobs_created_per_s"] / c["jobs_per_s"]
    cpu_ms = a["cpu_s"] * 1000 / n
    rows = [
        ("Job creations/s", f"{a['jobs_created_per_s']:.1f}", f"{c['jobs_per_s']:.1f}",
         f"{ratio:.2f}x", f"{BEFORE['creations_ratio']:.2f}x"),
        (f"peak RSS, {n} in flight, MiB", f"{a['peak_rss_mib']:.0f}", "", "",
         f"{BEFORE['rss_mib']}"),
        ("CPU ms/job", f"{cpu_ms:.1f}", "", "", f"{BEFORE['cpu_ms_per_job']}"),
        ("API requests/job", f"{a['api_requests'] / n:.2f}", "1.00", "", ""),
        (f"DB statements/job (N={s['n']})", f"{s['per_job']:.2f}", "", "",
         f"{BEFORE['statements']}"),
        ("claim-to-Job p50 / p95, ms",
         f"{a['claim_to_job_p50_s'] * 1000:.0f}/{a['claim_to_job_p95_s'] * 1000:.0f}", "", "", ""),
    ]  # fmt: skip
    print()
    print(f"{'':34} {'controller':>12} {'bare client':>12} {'ratio':>8} {'before':>8}")
    for label, *cols in rows:
        print(f"{label:34} " + " ".join(f"{v:>12}" if i < 2 else f"{v:>8}"
                                        for i, v in enumerate(cols)))  # fmt: skip
    print()
    print(
        f"{n} in flight: lost {a['lost']}, attempt>1 {a['attempt_gt_1']},"
        f" extra Jobs {a['extra_jobs']}"
    )
    print(
        f"{big['n']} rows, max_concurrent {big['max_concurrent']}: {big['wall_s']:.0f} s"
        f" ({big['rows_per_s']:.1f} rows/s), peak RSS {big['peak_rss_mib']:.0f} MiB,"
        f" CPU {big['cpu_s'] * 1000 / big['n']:.1f} ms/job, lost {big['lost']},"
        f" attempt>1 {big['attempt_gt_1']}, extra Jobs {big['extra_jobs']}"
    )
    print(
        f"{args.shared} rows, three installations vs one: {three['rows_per_s']:.1f} vs"
        f" {one['rows_per_s']:.1f} rows/s ({three['rows_per_s'] / one['rows_per_s']:.2f}x),"
        f" rows per installation {three['rows_per_installation']}, lost {three['lost']},"
        f" attempt>1 {three['attempt_gt_1']}, extra Jobs {three['extra_jobs']}"
    )
    print(
        f"original worker pattern (one claim per {ORIGINAL_POLL_SECONDS:.0f} s poll):"
        f" {1 / ORIGINAL_POLL_SECONDS:.2f} rows/s; three installations:"
        f" {three['rows_per_s'] * ORIGINAL_POLL_SECONDS:.0f}x that"
    )
    print(f"total bench time: {time.monotonic() - began:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
