"""One line per figure for `make bench`: the value, its goal and whether it is met, with the load
average of the machine at the time (every figure here is a ratio or a distribution measured in
the same run; the load says how busy the machine was around it)."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min, {os.cpu_count()} cores)"


def verdict(label: str, value: float, goal: float, unit: str = "", *, at_most: bool = True) -> str:
    met = value <= goal if at_most else value >= goal
    sign = "<=" if at_most else ">="
    text = (
        f"{label}: {value:.3f}{unit}   goal {sign} {goal:g}{unit}   {'met' if met else 'NOT MET'}"
    )
    return f"{text}   [{load()}]"


def p(values: Sequence[float], q: float) -> float:
    """The q-quantile (0-1), inclusive method; the value itself for one sample."""
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def spread(values: Sequence[float], unit: str = " s") -> str:
    v = sorted(values)
    return (
        f"n={len(v)} min {v[0]:.3f}{unit} p50 {p(v, 0.5):.3f}{unit} p95 {p(v, 0.95):.3f}{unit} "
        f"max {v[-1]:.3f}{unit}"
    )
