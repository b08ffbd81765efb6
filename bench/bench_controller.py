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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import _plots as plots  # noqa: E402
from bench._controller_runs import (  # noqa: E402
    run_bare,
    run_in_flight,
    run_installations,
    run_large,
    run_latency,
    run_statements,
)
from bench._report import LATENCIES_MS, replay, report  # noqa: E402
from bench._runs import settle  # noqa: E402
from devcluster.controlplane import LocalCluster  # noqa: E402


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


if __name__ == "__main__":
    raise SystemExit(main())
