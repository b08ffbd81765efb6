"""The edit list as an ffmpeg audio filter chain, with the duration it produces.

Edits apply in order, each to the output of the one before: `trim` then `speed` trims the
original timeline, `speed` then `trim` trims the sped-up one. Fades need the length of the
audio at their point in the chain, so the builder tracks it from the probed input duration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runner.errors import PermanentError
from runner.payloads import FadeIn, FadeOut, Gain, Speed, Trim

AnyEdit = Trim | FadeIn | FadeOut | Gain | Speed

ATEMPO_MIN, ATEMPO_MAX = 0.5, 2.0  # the range one atempo filter accepts


@dataclass(frozen=True)
class FilterPlan:
    filters: list[str]
    duration: float  # seconds of audio the chain outputs

    @property
    def graph(self) -> str:
        """The -af argument; `anull` keeps the command uniform when there are no edits."""
        return ",".join(self.filters) or "anull"


def atempo_chain(factor: float) -> list[str]:
    """atempo steps whose product is `factor`, each within atempo's 0.5-2.0 range."""
    steps: list[float] = []
    rest = factor
    while rest > ATEMPO_MAX:
        steps.append(ATEMPO_MAX)
        rest /= ATEMPO_MAX
    while rest < ATEMPO_MIN:
        steps.append(ATEMPO_MIN)
        rest /= ATEMPO_MIN
    if abs(rest - 1.0) > 1e-9 or not steps:
        steps.append(rest)
    return [f"atempo={_num(s)}" for s in steps]


def build_filters(
    edits: Sequence[AnyEdit], *, input_seconds: float, limit_seconds: float | None = None
) -> FilterPlan:
    """Filters for `edits` applied to `input_seconds` of audio, cut to `limit_seconds`."""
    filters: list[str] = []
    duration = input_seconds
    for index, edit in enumerate(edits):
        where = f"edit {index + 1} ({edit.op})"
        if isinstance(edit, Trim):
            if edit.start >= duration:
                raise PermanentError(
                    f"{where} starts at {edit.start:g} s but the audio is only {duration:.3f} s "
                    "long at that point; lower the start (permanent)"
                )
            end = duration if edit.end is None else min(edit.end, duration)
            filters.append(f"atrim=start={_num(edit.start)}:end={_num(end)}")
            filters.append("asetpts=PTS-STARTPTS")
            duration = end - edit.start
        elif isinstance(edit, FadeIn):
            length = min(edit.duration, duration)
            filters.append(f"afade=t=in:st=0:d={_num(length)}")
        elif isinstance(edit, FadeOut):
            length = min(edit.duration, duration)
            filters.append(f"afade=t=out:st={_num(duration - length)}:d={_num(length)}")
        elif isinstance(edit, Gain):
            filters.append(f"volume={_num(edit.db)}dB")
        else:
            filters.extend(atempo_chain(edit.factor))
            duration /= edit.factor
    if limit_seconds is not None and limit_seconds < duration:
        filters.append(f"atrim=end={_num(limit_seconds)}")
        duration = limit_seconds
    return FilterPlan(filters=filters, duration=duration)


def _num(value: float) -> str:
    # Fixed notation: ffmpeg reads 1e-05, but a person reading the logs should not have to.
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"
