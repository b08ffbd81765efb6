"""PNG plots of a controller run, next to the bench's figures (bench/out/): rows finished per
second over time, the claim → Running latency CDF, and the controller's RSS over time."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a bench machine
import matplotlib.pyplot as plt

from bench._runs import Sample

OUT = Path(__file__).resolve().parent / "out"
WINDOW_SECONDS = 2.0
"""Rows/s is counted over windows this long: the samples are 0.25 s apart, too noisy alone."""


def claim_to_running_seconds(db_path: Path) -> list[float]:
    """Per row: its pod's start (the attempts ledger) minus its claim (`started_at` of the row),
    for the attempt the row ended with."""
    with sqlite3.connect(db_path, timeout=10) as db:
        rows = db.execute(
            "SELECT a.started_at - j.started_at FROM audio_jobs j JOIN audio_job_attempts a"
            " ON a.job_id = j.job_id AND a.attempt = j.attempt"
            " WHERE a.started_at IS NOT NULL AND j.started_at IS NOT NULL"
        ).fetchall()
    return sorted(max(0, ms) / 1000 for (ms,) in rows)


def rows_per_second(samples: Sequence[Sample]) -> tuple[list[float], list[float]]:
    times, rates = [], []
    last = samples[0] if samples else None
    for s in samples[1:]:
        assert last is not None
        if s.t - last.t >= WINDOW_SECONDS:
            times.append(s.t)
            rates.append((s.terminal - last.terminal) / (s.t - last.t))
            last = s
    return times, rates


def write(
    name: str, samples: Sequence[Sample], latencies: Sequence[float], title: str
) -> list[Path]:
    """Three PNGs named `<name>-*.png` in bench/out/; returns their paths."""
    OUT.mkdir(exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(*rows_per_second(samples))
    ax.set(xlabel="seconds since the controller started", ylabel="rows finished / s", title=title)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, f"{name}-rows-per-second.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    n = len(latencies)
    ax.step(latencies, [(i + 1) / n for i in range(n)], where="post")
    ax.set(
        xlabel="claim → pod Running, seconds",
        ylabel="fraction of rows",
        title=f"{title}: claim → Running CDF ({n} rows)",
    )
    ax.grid(alpha=0.3)
    paths.append(_save(fig, f"{name}-claim-to-running-cdf.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([s.t for s in samples], [s.rss_mib for s in samples])
    ax.set(xlabel="seconds since the controller started", ylabel="RSS, MiB", title=title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, f"{name}-rss.png"))
    return paths


def _save(fig: plt.Figure, filename: str) -> Path:
    path = OUT / filename
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figures(runs: dict[str, Any], goals: Sequence[tuple[str, str, bool | None]]) -> list[Path]:
    """The summary PNGs of one bench_controller.py run: Job creations/s and CPU per Job of the
    controller beside its baselines, and the latency runs' rows/s and claim -> Job."""
    OUT.mkdir(exist_ok=True)
    paths = []
    creators = [
        (label, runs[key])
        for key, label in (
            ("F1", "aiohttp\n(before)"),
            ("K1", "kubernetes.aio\n(before)"),
            ("C1", "threads\n(before)"),
            ("A", "controller"),
            ("F2", "aiohttp\n(after)"),
            ("K2", "kubernetes.aio\n(after)"),
            ("C2", "threads\n(after)"),
        )
        if key in runs
    ]
    if "A" in runs and len(creators) > 1:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
        labels = [label for label, _ in creators]
        rates = [r.get("jobs_per_s", r.get("jobs_created_per_s", 0)) for _, r in creators]
        left.bar(labels, rates, color=["C1" if lab == "controller" else "C0" for lab in labels])
        left.set(ylabel="Job creations / s", title=f"{runs['A']['n']:,} Jobs, 16 at a time")
        cpu = [r.get("cpu_ms_per_job", r.get("cpu_s", 0) * 1000 / r["n"]) for _, r in creators]
        right.bar(labels, cpu, color=["C1" if lab == "controller" else "C0" for lab in labels])
        right.axhline(10, color="red", linestyle="--", label="goal: 10 ms per job")
        right.set(ylabel="CPU ms per Job", title="CPU per Job (controller: whole process)")
        right.legend()
        for ax in (left, right):
            ax.tick_params(axis="x", labelsize=7)
            ax.grid(alpha=0.3, axis="y")
        paths.append(_save(fig, "baselines.png"))
    latency = sorted((r["rtt_ms"], r) for k, r in runs.items() if k.startswith("T"))
    if latency:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
        ms = [m for m, _ in latency]
        left.plot(ms, [r["rows_per_s"] for _, r in latency], marker="o")
        left.set(xlabel="round trip to the database, ms", ylabel="rows / s", ylim=(0, None))
        left.set_title("throughput", fontsize=10)
        for q, key in (("p50", "claim_to_job_p50_s"), ("p95", "claim_to_job_p95_s")):
            right.plot(ms, [r[key] for _, r in latency], marker="o", label=q)
        right.set(xlabel="round trip to the database, ms", ylabel="seconds", ylim=(0, None))
        right.set_title("claim -> Job created", fontsize=10)
        right.legend()
        for ax in (left, right):
            ax.grid(alpha=0.3)
        paths.append(_save(fig, "latency.png"))
    judged = [g for g in goals if g[2] is not None]
    if judged:
        fig, ax = plt.subplots(figsize=(11, 0.32 * len(judged) + 0.6))
        ax.axis("off")
        for i, (figure, goal, met) in enumerate(judged):
            y = 1 - (i + 0.5) / len(judged)
            ax.text(0, y, "met" if met else "NOT MET", color="green" if met else "red",
                    fontsize=8, va="center", family="monospace")  # fmt: skip
            ax.text(0.08, y, f"{figure.strip()}   [goal {goal}]", fontsize=7, va="center")
        paths.append(_save(fig, "goals.png"))
    return paths
