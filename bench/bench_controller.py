"""The controller against bare Kubernetes clients, against itself over a slow database, and
against the original worker pattern, all on one local control plane (kwok fake nodes) in one
run. Every figure is a ratio against a baseline of the same run, or a distribution
(bench/README.md describes each run and its goal):

  F, K  baselines, each run before and after A and averaged: the same N Job bodies created at
        the controller's write concurrency (16) by the fastest bare client we could write (F:
        aiohttp, one keep-alive pool) and by the official async client (K: kubernetes.aio),
        each in its own process (bench/_bare_client.py): Job creations/s and CPU per Job.
  C     (not by default) the same with the official synchronous client in 16 threads, the
        baseline of the figures before issue 21.
  A     N rows (default 1,000), max_concurrent N, 20 s pods: all N in flight. Creations/s
        against F and K, peak RSS, CPU per job (and against F's CPU per Job), API requests per
        job, claim -> Job p50/p95; every row complete at attempt 1 with one Job.
  S     DB statements per job: 200 rows through the in-repo Hrana server.
  T     hosted-Turso latency: the controller over the Hrana server with a round-trip time of
        0, 20 and 50 ms added to every request; rows/s, claim -> Job p50/p95, statements and
        round trips per job at each.
  L     10,000 rows at max_concurrent 1,000, 1 s pods: rows/s, peak RSS and its slope once the
        in-flight set is full, CPU per job, rows read per job, lost rows, duplicate attempts.
  M     three installations sharing one database against one: aggregate rows/s.
  B     the original worker pattern (one claim per 3 s poll), computed.

Each run starts once the pods of the runs before it have ended (`settle`).

    python bench/bench_controller.py [--only FKASTLM] [--jobs N] [--large N] [--quick]
                                     [--profile] [--before REF] [--report LOG...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import _plots as plots  # noqa: E402
from bench._job_watch import JobWatch  # noqa: E402
from bench._runs import (  # noqa: E402
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
    settle,
    start_controller,
    stop,
    stop_all,
    terminal_count,
    wait_terminal,
)
from devcluster.controlplane import LocalCluster  # noqa: E402
from devcluster.hrana_server import HranaServer  # noqa: E402

ORIGINAL_POLL_SECONDS = 3.0
SIM_DURATION = "audiojob.dev/sim-duration"
PROFILE_RATE = 100
"""py-spy samples per second (--profile)."""


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


class Profiler:
    """py-spy attached to a process for its whole life (--profile); collapsed stacks."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("  --profile: py-spy not found (pip install py-spy)", flush=True)
            return
        self.proc = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--nonblocking",
                "--rate",
                str(PROFILE_RATE),
                "--format",
                "raw",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self) -> None:
        """Call once the profiled process has exited: py-spy then writes its file."""
        if self.proc is not None:
            self.proc.wait(timeout=60)
            print(f"  profile: {self.out} ({summarize_profile(self.out)})", flush=True)


def summarize_profile(path: Path, top: int = 8) -> str:
    """The functions with the most samples on CPU in them (inclusive), as % of all samples."""
    if not path.exists():
        return "no samples"
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in {f.split(" (")[0] for f in stack.split(";")}:
            incl[frame] = incl.get(frame, 0) + n
    skip = ("_run", "run", "main", "<module>", "_run_code", "_run_module_as_main", "_run_once")
    ranked = [
        (n, f)
        for f, n in sorted(incl.items(), key=lambda kv: -kv[1])
        if f not in skip and not f.startswith(("BaseEventLoop", "Runner", "Handle", "Engine.run"))
    ]
    return ", ".join(f"{f} {100 * n / total:.0f}%" for n, f in ranked[:top])


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
) -> tuple[float, float, float, str]:
    """(seconds until all n rows are terminal, peak RSS MiB, CPU s, /metrics) of one controller
    on a database file (or `db_url` in front of it); its progress and RSS over time go to
    `samples`."""
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
    with JobWatch(cluster.kubeconfig, ns, n) as watch:
        wall, rss, cpu, text = drain(
            cluster, ns, db, tmp / "controller-a.log", n=n, max_concurrent=n, pod_seconds=20,
            profile=plots.OUT / f"profile-{'A0' if src != REPO else 'A'}.txt" if profile else None,
            src=src,
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
def run_statements(cluster: LocalCluster, n: int, tmp: Path, src: Path = REPO) -> dict[str, Any]:
    """A smaller run through the counting Hrana server (the controller from `src`)."""
    ns = new_namespace(cluster)
    db = tmp / f"s-{uuid.uuid4().hex[:6]}.db"
    insert_rows(db, n, "s")
    server = HranaServer(str(db)).start()
    base = server.stats.statements
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
    finally:
        stop(proc)
        server.stop()
    return {
        "n": n,
        "statements": used,
        "per_job": used / n,
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


# -- the report ------------------------------------------------------------------------------------
BEFORE_ISSUE_21 = {
    "creations_vs_threads": 0.90,
    "rss_mib": 107,
    "cpu_ms_per_job": 20.2,
    "statements": 0.76,
}
"""`--only AC` on main before this branch (N=1,000, quiet machine): no figure may regress."""

LATENCIES_MS = (0, 20, 50)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="rows of run A (all in flight)")
    parser.add_argument("--statement-jobs", type=int, default=200)
    parser.add_argument("--latency-jobs", type=int, default=2000)
    parser.add_argument("--latency-concurrent", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--large-concurrent", type=int, default=1000)
    parser.add_argument(
        "--large-budget",
        type=float,
        metavar="SECONDS",
        help="stop run L after this long and report over the rows finished (a loaded machine)",
    )
    parser.add_argument("--shared", type=int, default=600)
    parser.add_argument("--write-concurrency", type=int, default=16)
    parser.add_argument(
        "--only", default="FKASTLM", help="which runs, e.g. FKA (C: the threaded client too)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short subset: FKAT at 500 rows, the latency runs at 500 rows all in flight",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy on run A's controller")
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also run A (as A0, before A) with the controller of this git ref: a before/after"
        " of a change in one run",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="LOG",
        help="no runs: the report and plots from the `KEY: {json}` lines of earlier runs' output"
        " (e.g. run L in a run of its own, then report both together)",
    )
    args = parser.parse_args()
    if args.report:
        runs = replay(args.report)
        goals = report(runs, runs.get("A", {}).get("n", args.jobs), args.shared)
        for path in plots.figures(runs, goals):
            print(f"wrote {path.relative_to(REPO)}")
        return 0
    if args.quick:
        args.only, args.jobs = "FKAT", 500
        args.latency_jobs = args.latency_concurrent = 500
    n = args.jobs
    began = time.monotonic()
    runs: dict[str, Any] = {}
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-controller-") as tmp_s:
        tmp = Path(tmp_s)
        print(f"starting the local control plane ... (N={n})", flush=True)
        # Enough fake nodes (110 pods each) for every attempt in flight to run at once: with
        # kwok's default three, pods of the large run waited Pending past their deadline.
        biggest = max(n, args.large_concurrent, args.latency_concurrent)
        with LocalCluster(nodes=max(3, -(-biggest // 100))) as cluster:
            print(f"  up in {time.monotonic() - began:.0f}s", flush=True)
            wc = args.write_concurrency
            # The baselines run before and after the controller and are averaged: on a shared
            # machine the load drifts between runs, and one side alone would carry it.
            plan = {
                "F1": lambda: run_bare(cluster, "aiohttp", n, wc),
                "K1": lambda: run_bare(cluster, "aio", n, wc),
                "C1": lambda: run_bare(cluster, "threads", n, wc),
                "A0": lambda: run_in_flight(
                    cluster, n, tmp, profile=args.profile, src=checkout(args.before, tmp)
                ),
                "A": lambda: run_in_flight(cluster, n, tmp, profile=args.profile),
                "F2": lambda: run_bare(cluster, "aiohttp", n, wc),
                "K2": lambda: run_bare(cluster, "aio", n, wc),
                "C2": lambda: run_bare(cluster, "threads", n, wc),
                "S0": lambda: run_statements(
                    cluster, min(args.statement_jobs, n), tmp, checkout(args.before, tmp)
                ),
                "S": lambda: run_statements(cluster, min(args.statement_jobs, n), tmp),
                **{
                    f"T{ms}": lambda ms=ms: run_latency(
                        cluster,
                        args.latency_jobs,
                        tmp,
                        max_concurrent=args.latency_concurrent,
                        rtt_ms=ms,
                    )
                    for ms in LATENCIES_MS
                },
                "L": lambda: run_large(
                    cluster, args.large, tmp, args.large_concurrent, args.large_budget
                ),
                "M1": lambda: run_installations(cluster, args.shared, tmp, 1),
                "M3": lambda: run_installations(cluster, args.shared, tmp, 3),
            }
            for key, run in plan.items():
                if key[0] in args.only and (key not in ("A0", "S0") or args.before):
                    if runs:
                        waited = settle(cluster)
                        print(f"  (cluster settled in {waited:.0f}s)", flush=True)
                    try:
                        runs[key] = run()
                    except Exception as e:  # the other runs' figures still count
                        print(f"{key}: FAILED: {type(e).__name__}: {e}", flush=True)
                        continue
                    print(f"{key}: {json.dumps(runs[key])}", flush=True)
    print()
    goals = report(runs, n, args.shared)
    for path in plots.figures(runs, goals):
        print(f"wrote {path.relative_to(REPO)}")
    print(f"total bench time: {time.monotonic() - began:.0f}s")
    return 0


def replay(logs: list[str]) -> dict[str, Any]:
    """The runs printed as `KEY: {json}` lines by earlier invocations, later ones winning."""
    runs: dict[str, Any] = {}
    for log in logs:
        for line in Path(log).read_text().splitlines():
            key, sep, rest = line.partition(": ")
            if sep and rest.startswith("{") and key.isalnum():
                runs[key] = json.loads(rest)
    return runs


def checkout(ref: str, tmp: Path) -> Path:
    """The controller and runner packages of a git ref, in a directory of their own."""
    out = tmp / f"src-{ref.replace('/', '_')}"
    if not out.exists():
        out.mkdir()
        archive = subprocess.run(
            ["git", "archive", ref, "controller", "runner"],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def _mean(runs: dict[str, Any], keys: tuple[str, ...], field: str) -> float | None:
    values = [runs[k][field] for k in keys if k in runs]
    return sum(values) / len(values) if values else None


def _load(runs: dict[str, Any], *keys: str) -> str:
    loads = [runs[k]["load"] for k in keys if k in runs and "load" in runs[k]]
    return f"load {min(loads):.1f}-{max(loads):.1f}" if loads else "load ?"


class Goals(list[tuple[str, str, bool | None]]):
    """(figure, goal, met) rows, printed as they come and listed again at the end."""

    def add(self, figure: str, goal: str = "", met: bool | None = None) -> None:
        self.append((figure, goal, met))
        verdict = "" if met is None else (" -- met" if met else " -- NOT MET")
        print(f"{figure}{f' (goal {goal})' if goal else ''}{verdict}", flush=True)


def report(runs: dict[str, Any], n: int, shared: int) -> Goals:
    goals = Goals()
    fast = _mean(runs, ("F1", "F2"), "jobs_per_s")
    fast_cpu = _mean(runs, ("F1", "F2"), "cpu_ms_per_job")
    aio = _mean(runs, ("K1", "K2"), "jobs_per_s")
    threads = _mean(runs, ("C1", "C2"), "jobs_per_s")
    for key, label in (("F", "fastest bare client (aiohttp)"), ("K", "kubernetes.aio"),
                       ("C", "threaded official client")):  # fmt: skip
        if f"{key}1" in runs:
            one, two = runs[f"{key}1"], runs.get(f"{key}2", runs[f"{key}1"])
            goals.add(
                f"baseline {label}: {one['jobs_per_s']:.1f} / {two['jobs_per_s']:.1f} Jobs/s"
                f" before/after, CPU {one['cpu_ms_per_job']:.2f} / {two['cpu_ms_per_job']:.2f}"
                f" ms/Job ({_load(runs, f'{key}1', f'{key}2')})"
            )
    if "A" in runs:
        a = runs["A"]
        rate = a["jobs_created_per_s"]
        cpu_ms = a["cpu_s"] * 1000 / n
        load = _load(runs, "A")
        goals.add(f"controller: {rate:.1f} Jobs/s ({n} in {a['creation_span_s']:.2f} s, {load})")
        if fast:
            goals.add(f"Job creations vs the fastest bare client: {rate / fast:.2f}x", ">= 0.9x",
                      rate / fast >= 0.9)  # fmt: skip
        if aio:
            goals.add(f"Job creations vs kubernetes.aio: {rate / aio:.2f}x")
        if threads:
            goals.add(
                f"Job creations vs the threaded client: {rate / threads:.2f}x (before issue 21:"
                f" {BEFORE_ISSUE_21['creations_vs_threads']:.2f}x)",
                f">= {BEFORE_ISSUE_21['creations_vs_threads']:.2f}x (no regression)",
                rate / threads >= BEFORE_ISSUE_21["creations_vs_threads"],
            )
        goals.add(
            f"{n} in flight: peak RSS {a['peak_rss_mib']:.0f} MiB (before issue 21:"
            f" {BEFORE_ISSUE_21['rss_mib']})",
            f"<= {BEFORE_ISSUE_21['rss_mib']} MiB (no regression)",
            a["peak_rss_mib"] <= BEFORE_ISSUE_21["rss_mib"],
        )
        goals.add(f"{n} in flight: CPU {cpu_ms:.1f} ms/job ({load})", "<= 10 ms", cpu_ms <= 10)
        if fast_cpu:
            goals.add(
                f"CPU per job vs the fastest bare client's CPU per created Job:"
                f" {cpu_ms / fast_cpu:.1f}x ({fast_cpu:.2f} ms/Job)"
            )
        goals.add(
            f"{n} in flight: API requests/job {a['api_requests'] / n:.2f}, claim -> Job p50/p95"
            f" {a['claim_to_job_p50_s']:.1f}/{a['claim_to_job_p95_s']:.1f} s, watch events/job"
            f" {a.get('watch_events', 0) / n:.1f} ({a.get('watch_bytes', 0) / n / 1024:.0f} KiB)"
        )
        goals.add(
            f"{n} in flight: not complete {a['lost']}, attempt>1 {a['attempt_gt_1']}, extra Jobs"
            f" {a['extra_jobs']}",
            "0 each",
            a["lost"] == a["attempt_gt_1"] == a["extra_jobs"] == 0,
        )
    if "A0" in runs and "A" in runs:
        a0, a = runs["A0"], runs["A"]
        goals.add(
            f"A before ({_load(runs, 'A0')}) -> after ({_load(runs, 'A')}): Jobs/s"
            f" {a0['jobs_created_per_s']:.1f} -> {a['jobs_created_per_s']:.1f}, CPU"
            f" {a0['cpu_s'] * 1000 / n:.1f} -> {a['cpu_s'] * 1000 / n:.1f} ms/job, peak RSS"
            f" {a0['peak_rss_mib']:.0f} -> {a['peak_rss_mib']:.0f} MiB, claim -> Job p95"
            f" {a0['claim_to_job_p95_s']:.1f} -> {a['claim_to_job_p95_s']:.1f} s"
        )
    if "S0" in runs and "S" in runs:
        goals.add(
            f"DB statements/job before -> after ({_load(runs, 'S0', 'S')}):"
            f" {runs['S0']['per_job']:.2f} -> {runs['S']['per_job']:.2f}",
            "no regression",
            runs["S"]["per_job"] <= runs["S0"]["per_job"],
        )
    if "S" in runs:
        s = runs["S"]
        goals.add(
            f"DB statements/job (N={s['n']}): {s['per_job']:.2f} (before issue 21:"
            f" {BEFORE_ISSUE_21['statements']})",
            f"<= {BEFORE_ISSUE_21['statements']} (no regression)",
            s["per_job"] <= BEFORE_ISSUE_21["statements"],
        )
    zero = runs.get("T0")
    for ms in LATENCIES_MS:
        if (t := runs.get(f"T{ms}")) is None:
            continue
        goals.add(
            f"{ms} ms to the database ({t['n']} rows, {t['max_concurrent']} in flight,"
            f" {_load(runs, f'T{ms}')}): {t['rows_per_s']:.1f} rows/s, claim -> Job p50/p95"
            f" {t['claim_to_job_p50_s']:.2f}/{t['claim_to_job_p95_s']:.2f} s, statements/job"
            f" {t['statements_per_job']:.2f}, round trips/job {t['round_trips_per_job']:.2f},"
            f" CPU {t['cpu_ms_per_job']:.1f} ms/job, not complete {t['lost']}, attempt>1"
            f" {t['attempt_gt_1']}, extra Jobs {t['extra_jobs']}"
        )
        if ms and zero is not None:
            ratio = t["rows_per_s"] / zero["rows_per_s"]
            goals.add(f"  rows/s at {ms} ms vs 0 ms: {ratio:.2f}x", ">= 0.8x", ratio >= 0.8)
            # The create time is the 0 ms run's claim -> Job p95: what the same batch takes to
            # create with no round trip in it.
            budget = 3 * ms / 1000 + zero["claim_to_job_p95_s"]
            goals.add(
                f"  claim -> Job p95 at {ms} ms: {t['claim_to_job_p95_s']:.2f} s (0 ms:"
                f" {zero['claim_to_job_p95_s']:.2f} s)",
                f"<= 3 round trips + the create time = {budget:.2f} s",
                t["claim_to_job_p95_s"] <= budget,
            )
    if "L" in runs:
        big = runs["L"]
        cpu_ms = big["cpu_s"] * 1000 / big["n"]
        head = f"{big['n']:,} rows, max_concurrent {big['max_concurrent']:,}"
        if big.get("partial"):
            head += f" (PARTIAL: {big['n']:,} of {big['rows']:,} rows in the time budget)"
        goals.add(
            f"{head} ({_load(runs, 'L')}): {big['wall_s']:.0f} s ({big['rows_per_s']:.1f} rows/s),"
            f" peak RSS {big['peak_rss_mib']:.0f} MiB"
        )
        lo, hi = big["rss_window_mib"]
        goals.add(
            f"{head}: RSS slope once the in-flight set is full"
            f" {big['rss_slope_mib_per_1000_rows']:+.2f} MiB per 1,000 rows ({lo:.0f} -> {hi:.0f}"
            " MiB)",
            "flat: <= +1 MiB per 1,000 rows",
            big["rss_slope_mib_per_1000_rows"] <= 1.0,
        )
        goals.add(f"{head}: CPU {cpu_ms:.1f} ms/job", "<= 10 ms", cpu_ms <= 10)
        goals.add(
            f"{head}: not complete {big['lost']}, attempt>1 {big['attempt_gt_1']}, extra Jobs"
            f" {big['extra_jobs']}",
            "0 each",
            big["lost"] == big["attempt_gt_1"] == big["extra_jobs"] == 0,
        )
        goals.add(
            f"{head}: rows read/job {big['rows_read_per_job']:.1f}, of which the claim"
            f" {big['claim_rows_read_per_job']:.2f}",
            "claim on its index: <= 10 rows read per claimed row, whatever the backlog",
            big["claim_rows_read_per_job"] <= 10,
        )
    if "M1" in runs and "M3" in runs:
        one, three = runs["M1"], runs["M3"]
        goals.add(
            f"{shared} rows, three installations vs one: {three['rows_per_s']:.1f} vs"
            f" {one['rows_per_s']:.1f} rows/s ({three['rows_per_s'] / one['rows_per_s']:.2f}x),"
            f" rows per installation {three['rows_per_installation']}, not complete"
            f" {three['lost']}, attempt>1 {three['attempt_gt_1']}, extra Jobs"
            f" {three['extra_jobs']}"
        )
    goals.add(
        f"original worker pattern (one claim per {ORIGINAL_POLL_SECONDS:.0f} s poll):"
        f" {1 / ORIGINAL_POLL_SECONDS:.2f} rows/s"
    )
    judged = [g for g in goals if g[2] is not None]
    print(f"\ngoals: {sum(1 for g in judged if g[2])} of {len(judged)} met")
    for figure, goal, met in judged:
        print(f"  {'met    ' if met else 'NOT MET'}  {figure.strip()}  [goal {goal}]")
    return goals


if __name__ == "__main__":
    raise SystemExit(main())
