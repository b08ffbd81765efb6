"""The controller bench's report: every figure with its goal, met or not, from the runs'
JSON (`bench_controller.py`, or `--report` on earlier runs' output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ORIGINAL_POLL_SECONDS = 3.0

BEFORE_ISSUE_21 = {
    "creations_vs_threads": 0.90,
    "rss_mib": 107,
    "cpu_ms_per_job": 20.2,
    "statements": 0.76,
}
"""`--only AC` on main before this branch (N=1,000, quiet machine): no figure may regress."""

LATENCIES_MS = (0, 20, 50)


def replay(logs: list[str]) -> dict[str, Any]:
    """The runs printed as `KEY: {json}` lines by earlier invocations, later ones winning."""
    runs: dict[str, Any] = {}
    for log in logs:
        for line in Path(log).read_text().splitlines():
            key, sep, rest = line.partition(": ")
            if sep and rest.startswith("{") and key.isalnum():
                runs[key] = json.loads(rest)
    return runs


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
        if a.get("cpu_main_thread_s") is not None:
            main_ms = 1000 * a["cpu_main_thread_s"] / n
            goals.add(
                f"  of which the event loop's thread {main_ms:.1f} ms/job, the database"
                f" file's and DNS threads {cpu_ms - main_ms:.1f} ms/job"
            )
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
        if "cancel_checks_per_job" in s:
            goals.add(
                f"  of which looks for cancelled rows (claim.cancelCheckIntervalSeconds, each"
                f" reading no row): {s['cancel_checks_per_job']:.2f}; the rest"
                f" {s['per_job'] - s['cancel_checks_per_job']:.2f}"
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
