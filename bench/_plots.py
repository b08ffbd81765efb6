"""PNG plots of a controller run, next to the bench's figures (bench/out/): rows finished per
second over time, the claim → Running latency CDF, and the controller's RSS over time."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

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
