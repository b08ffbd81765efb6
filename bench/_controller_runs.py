"""The runs of the controller bench (`bench_controller.py`): each starts what it measures on
the shared local control plane and answers its figures as JSON-able dicts."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from bench import _plots as plots
from bench._job_watch import JobWatch
from bench._profile import Profiler
from bench._runs import (
    Sample,
    check_once,
    failed_count,
    histogram_quantiles,
    insert_rows,
    metric_sum,
    new_namespace,
    pending_count,
    proc_usage,
    rss_slope,
    scrape,
    start_controller,
    stop,
    stop_all,
    terminal_count,
    thread_cpu,
    wait_terminal,
)
from devcluster.controlplane import LocalCluster
from devcluster.hrana_server import HranaServer

REPO = Path(__file__).resolve().parents[1]
SIM_DURATION = "audiojob.dev/sim-duration"


# -- the controller --------------------------------------------------------------------------------
def start_bench_controller(
    cluster: LocalCluster,
    namespace: str,
    db_url: str,
    log: Path,
    *,
    max_concurrent: int,
    pod_seconds: int | None = None,
    src: Path = REPO,
    ttl_seconds: int | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """A controller (from `src`) with the bench's fast clocks; kwok pods that run
    `pod_seconds`."""
    env = {
        "AUDIOJOB_CLAIM__MAX_CONCURRENT": str(max_concurrent),
        "AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS": "0.5",
        "AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS": "5",
        # kwok's pods run no runner, so they never heartbeat: on a loaded machine kwok ends a
        # "20 s" pod a minute or more late, and the default 60 s stale clock then killed and
        # retried 405 of 1,000 rows (a run at load 6), which measures kwok, not the controller.
        "AUDIOJOB_TIMEOUTS__HEARTBEAT_STALE_SECONDS": "900",
        # Likewise kwok's start: at load 10-20 it left pods ContainerCreating past the 5 min
        # pending clock, and 440 rows of a 10,000-row run failed for it.
        "AUDIOJOB_TIMEOUTS__PENDING_SECONDS": "1800",
    }
    if ttl_seconds is not None:
        env["AUDIOJOB_RUNNER__TTL_SECONDS_AFTER_FINISHED"] = str(ttl_seconds)
    if pod_seconds is not None:
        env["AUDIOJOB_RUNNER__POD_ANNOTATIONS"] = json.dumps({SIM_DURATION: f"{pod_seconds}s"})
    return start_controller(cluster, namespace, db_url, log, src=src, **env)


def drain(
    cluster: LocalCluster,
    namespace: str,
    db: Path,
    log: Path,
    *,
    n: int,
    max_concurrent: int,
    pod_seconds: int,
    db_url: str | None = None,
    samples: list[Sample] | None = None,
    profile: Path | None = None,
    src: Path = REPO,
    ttl_seconds: int | None = None,
    budget: float | None = None,
    threads: dict[str, float] | None = None,
) -> tuple[float, float, float, str]:
    """(seconds until all n rows are terminal, peak RSS MiB, CPU s, /metrics) of one controller
    on a database file (or `db_url` in front of it); its progress and RSS over time go to
    `samples`; `threads` gets the CPU seconds of its main thread and of the others."""
    proc, port = start_bench_controller(
        cluster,
        namespace,
        db_url or f"file:{db}",
        log,
        max_concurrent=max_concurrent,
        pod_seconds=pod_seconds,
        src=src,
        ttl_seconds=ttl_seconds,
    )
    profiler = Profiler(proc.pid, profile) if profile else None
    try:
        wall = wait_terminal(db, n, timeout=3600, proc=proc, samples=samples, budget=budget)
        rss, cpu = proc_usage(proc.pid)
        if threads is not None:
            threads["main"], threads["other"] = thread_cpu(proc.pid)
        return wall, rss, cpu, scrape(port)
    finally:
        stop(proc)
        if profiler is not None:
            profiler.finish()


def run_in_flight(
    cluster: LocalCluster, n: int, tmp: Path, *, profile: bool, src: Path = REPO
) -> dict[str, Any]:
    ns = new_namespace(cluster)
    db = tmp / f"a-{uuid.uuid4().hex[:6]}.db"
    insert_rows(db, n, "a")
    threads: dict[str, float] = {}
    with JobWatch(cluster.kubeconfig, ns, n) as watch:
        wall, rss, cpu, text = drain(
            cluster, ns, db, tmp / "controller-a.log", n=n, max_concurrent=n, pod_seconds=20,
            profile=plots.OUT / f"profile-{'A0' if src != REPO else 'A'}.txt" if profile else None,
            src=src, threads=threads,
        )  # fmt: skip
        created = watch.result()
    checked = check_once(db, cluster, [ns])
    qs = histogram_quantiles(text, "audiojob_claim_to_job_seconds", (0.5, 0.95))
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
        "cpu_main_thread_s": threads.get("main"),
        "api_requests": metric_sum(text, "audiojob_api_requests_total"),
        "watch_events": metric_sum(text, "audiojob_watch_events_total"),
        "watch_bytes": metric_sum(text, "audiojob_watch_bytes_total"),
        "load": os.getloadavg()[0],
        **checked,
    }


# -- the baselines ---------------------------------------------------------------------------------
def run_bare(cluster: LocalCluster, mode: str, n: int, concurrency: int) -> dict[str, Any]:
    """One bare client (bench/_bare_client.py) creating n Jobs in a fresh namespace."""
    ns = new_namespace(cluster)
    with JobWatch(cluster.kubeconfig, ns, n) as watch:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench._bare_client",
                mode,
                str(cluster.kubeconfig),
                ns,
                str(n),
                str(concurrency),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        measured = json.loads(out.stdout)
        created = watch.result()
    return {
        "mode": mode,
        "n": n,
        "concurrency": concurrency,
        "seconds": measured["seconds"],
        "cpu_ms_per_job": measured["cpu_s"] * 1000 / n,
        "jobs_per_s": created.pop("per_s"),
        "creation_span_s": created.pop("span_s"),
        "load": os.getloadavg()[0],
        **created,
    }


# -- the database ----------------------------------------------------------------------------------
def cancel_checks(server: HranaServer) -> int:
    """Statements that looked for cancelled rows (claim.cancelCheckIntervalSeconds)."""
    return sum(
        n for sql, n in server.stats.texts.items() if "status = 'cancelled' AND finished_at" in sql
    )


def run_statements(cluster: LocalCluster, n: int, tmp: Path, src: Path = REPO) -> dict[str, Any]:
    """A smaller run through the counting Hrana server (the controller from `src`)."""
    ns = new_namespace(cluster)
    db = tmp / f"s-{uuid.uuid4().hex[:6]}.db"
    insert_rows(db, n, "s")
    server = HranaServer(str(db)).start()
    base = server.stats.statements
    checks_before = cancel_checks(server)
    proc, _ = start_bench_controller(
        cluster,
        ns,
        server.url("http"),
        tmp / "controller-s.log",
        max_concurrent=n,
        src=src,
    )
    try:
        wall = wait_terminal(db, n, timeout=300, proc=proc)
        used = server.stats.statements - base
        checks = cancel_checks(server) - checks_before
    finally:
        stop(proc)
        server.stop()
    return {
        "n": n,
        "statements": used,
        "per_job": used / n,
        "cancel_checks_per_job": checks / n,
        "wall_s": wall,
        "load": os.getloadavg()[0],
    }


def run_latency(
    cluster: LocalCluster, n: int, tmp: Path, *, max_concurrent: int, rtt_ms: int
) -> dict[str, Any]:
    """The controller over the Hrana server with `rtt_ms` added to every request (the network
    to hosted Turso), `max_concurrent` in flight, 1 s pods."""
    ns = new_namespace(cluster)
    db = tmp / f"t{rtt_ms}.db"
    insert_rows(db, n, "t")
    server = HranaServer(str(db)).start()
    server.round_trip_seconds = rtt_ms / 1000
    statements, requests = server.stats.statements, server.stats.requests
    samples: list[Sample] = []
    try:
        wall, rss, cpu, text = drain(
            cluster, ns, db, tmp / f"controller-t{rtt_ms}.log", n=n,
            max_concurrent=max_concurrent, pod_seconds=1, db_url=server.url("http"),
            samples=samples,
        )  # fmt: skip
        statements = server.stats.statements - statements
        requests = server.stats.requests - requests
    finally:
        server.stop()
    qs = histogram_quantiles(text, "audiojob_claim_to_job_seconds", (0.5, 0.95))
    create = histogram_quantiles(
        text, "audiojob_api_request_duration_seconds", (0.5, 0.95), labels='verb="create"'
    )
    title = f"{n:,} rows, {max_concurrent:,} in flight, {rtt_ms} ms to the database"
    latencies = plots.claim_to_running_seconds(db)
    for path in plots.write(f"latency-{rtt_ms}ms", samples, latencies, title):
        print(f"  wrote {path.relative_to(REPO)}", flush=True)
    return {
        "n": n,
        "rtt_ms": rtt_ms,
        "max_concurrent": max_concurrent,
        "wall_s": wall,
        "rows_per_s": n / wall,
        "claim_to_job_p50_s": qs.get(0.5, float("nan")),
        "claim_to_job_p95_s": qs.get(0.95, float("nan")),
        "create_call_p95_s": create.get(0.95, float("nan")),
        "statements_per_job": statements / n,
        "round_trips_per_job": requests / n,
        "peak_rss_mib": rss,
        "cpu_ms_per_job": cpu * 1000 / n,
        "load": os.getloadavg()[0],
        **check_once(db, cluster, [ns]),
    }


# -- long runs -------------------------------------------------------------------------------------
LARGE_TTL_SECONDS = 60
"""The finished Jobs' TTL in run L (default 10 min). The controller's view holds every managed
Job and pod until Kubernetes collects it, so its memory grows with the rows finished within
one TTL, then stays flat; 60 s brings that plateau within the run (bench/README.md)."""


def run_large(
    cluster: LocalCluster, n: int, tmp: Path, max_concurrent: int, budget: float | None = None
) -> dict[str, Any]:
    """`budget`: stop after that many seconds and report over the rows finished by then
    (`partial`), for a machine too loaded to finish n rows in the time there is."""
    ns = new_namespace(cluster)
    db = tmp / "l.db"
    insert_rows(db, n, "l")
    samples: list[Sample] = []
    wall, rss, cpu, text = drain(
        cluster, ns, db, tmp / "controller-l.log", n=n, max_concurrent=max_concurrent,
        pod_seconds=1, samples=samples, ttl_seconds=LARGE_TTL_SECONDS, budget=budget,
    )  # fmt: skip
    done = terminal_count(db)
    partial = done < n
    title = f"{n:,} rows, max_concurrent {max_concurrent:,}, 1 s pods"
    for path in plots.write("large", samples, plots.claim_to_running_seconds(db), title):
        print(f"  wrote {path.relative_to(REPO)}", flush=True)
    # Memory once the in-flight set is full: from the first max_concurrent rows done (every
    # cache has seen a whole in-flight set) until the last max_concurrent start to drain.
    slope, window = rss_slope(
        samples, start=max_concurrent, end=(done if partial else n - max_concurrent)
    )
    read = metric_sum(text, "audiojob_db_rows_read_total")
    claim_read = metric_sum(text, 'audiojob_db_rows_read_total{kind="claim"}')
    claimed = n - pending_count(db)
    checked = check_once(db, cluster, [ns])
    if partial:  # rows still pending or running are not lost
        checked["lost"] = failed_count(db)
    return {
        "n": done,
        "rows": n,
        "partial": partial,
        "max_concurrent": max_concurrent,
        "wall_s": wall,
        "rows_per_s": done / wall,
        "peak_rss_mib": rss,
        "rss_slope_mib_per_1000_rows": slope,
        "rss_window_mib": window,
        "cpu_s": cpu,
        "rows_read_per_job": read / max(done, 1),
        "claim_rows_read_per_job": claim_read / max(claimed, 1),
        "load": os.getloadavg()[0],
        **checked,
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
        "load": os.getloadavg()[0],
        **check_once(db, cluster, spaces),
    }
