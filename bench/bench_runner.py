"""The runner against plain ffmpeg on the same transcode, on the host, as ratios from one run
(issue 21, part 5: "the runner's fixed cost").

- Overhead ratio: both sides turn the same 10-minute stereo WAV into 192 kb/s MP3; medians of
  REPEATS alternating runs. Goal: the runner at most 1.05x plain ffmpeg, in wall-clock time.
  The CPU time (user + system, the runner's children included) is printed beside it: on a
  machine shared with others the wall clock of a 10-second run moves by tens of percent from
  run to run, the CPU time by a few.
- Fixed cost: the same on a SHORT_SECONDS WAV, where the work is tiny and what is left is what
  the runner adds whatever the input: the runner's time minus plain ffmpeg's, with its parts
  measured alone in the same run (interpreter start, the runner's imports, one ffprobe; the
  runner probes its input and its output). Figures for each part are medians of REPEATS.

A save job on the host runs exactly what the pod runs, less the pod's progress patches
(bench_realpods.py measures the runner in a real pod).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _goal import load, verdict

# BENCH_RUNNER_TREE: the runner of another checkout (e.g. `git archive` of an older commit).
REPO = Path(os.environ.get("BENCH_RUNNER_TREE") or Path(__file__).resolve().parents[1])
REPEATS = int(os.environ.get("BENCH_RUNNER_REPEATS", "3"))
SECONDS_OF_AUDIO = 600
SHORT_SECONDS = 2
GOAL_RATIO = 1.05


CPU: list[tuple[str, float]] = []  # (what, CPU seconds) of every timed run


def timed(argv: list[str], env: dict[str, str] | None = None, what: str = "") -> float:
    """Wall-clock seconds of one run; its CPU seconds (children included) go to CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # cwd: `python -m` puts it first on sys.path, before PYTHONPATH (BENCH_RUNNER_TREE).
    subprocess.run(argv, check=True, env=env, capture_output=True, timeout=600, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append((what, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))
    return wall


def cpu(what: str) -> float:
    return statistics.median(c for w, c in CPU if w == what)


def tone(path: Path, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
         "-ac", "2", str(path)],
        check=True, timeout=300,
    )  # fmt: skip


def plain(source: Path, out: Path) -> list[str]:
    return ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c:a", "libmp3lame",
            "-b:a", "192k", "-ar", "44100", "-f", "mp3", str(out)]  # fmt: skip


def runner_env(root: Path, out_dir: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "KUBECONFIG")}
    env.update(
        AUDIOJOB_ID=f"bench-{name}",
        AUDIOJOB_TYPE="save",
        AUDIOJOB_PAYLOAD=json.dumps({"input": name, "format": "mp3"}),
        AUDIOJOB_OUTPUT=str(out_dir),
        AUDIOJOB_TERMINATION_LOG=str(root / "termination-log"),
        PYTHONPATH=str(REPO),
    )
    return env


def alternate(a: Callable[[], float], b: Callable[[], float]) -> tuple[float, float]:
    first, second = [], []
    for _ in range(REPEATS):
        first.append(a())
        second.append(b())
    return statistics.median(first), statistics.median(second)


def main() -> int:
    runner = [sys.executable, "-m", "runner"]
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        root = Path(tmp)
        out_dir = root / "out"
        out_dir.mkdir()
        long, short = out_dir / "long.wav", out_dir / "short.wav"
        tone(long, SECONDS_OF_AUDIO)
        tone(short, SHORT_SECONDS)

        print(f"-- the runner vs plain ffmpeg, {SECONDS_OF_AUDIO} s WAV -> 192k MP3 "
              f"(median of {REPEATS} alternating runs)  [{load()}]")  # fmt: skip
        env = runner_env(root, out_dir, long.name)
        b, r = alternate(
            lambda: timed(plain(long, root / "p.mp3"), what="plain"),
            lambda: timed(runner, env, what="runner"),
        )
        result = json.loads((root / "termination-log").read_text())
        assert result["ok"], result
        print(f"plain ffmpeg {b:.2f} s   runner {r:.2f} s   (+{r - b:.2f} s)")
        print(f"CPU: plain ffmpeg {cpu('plain'):.2f} s   runner {cpu('runner'):.2f} s")
        print(verdict("runner / plain ffmpeg on the host (wall clock)", r / b, GOAL_RATIO, "x"))
        ratio = cpu("runner") / cpu("plain")
        print(verdict("runner / plain ffmpeg on the host (CPU time)", ratio, GOAL_RATIO, "x"))

        print(f"-- the fixed cost: a {SHORT_SECONDS} s WAV, and the parts alone  [{load()}]")
        env = runner_env(root, out_dir, short.name)
        sb, sr = alternate(
            lambda: timed(plain(short, root / "p.mp3"), what="plain-short"),
            lambda: timed(runner, env, what="runner-short"),
        )
        py = [sys.executable, "-c", "pass"]
        imports = [sys.executable, "-c", "import runner.__main__"]
        alternate(lambda: timed(py, what="start"), lambda: timed(imports, env, what="imports"))
        probe_argv = ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-print_format",
                      "json", "-show_format", "-show_streams", str(short)]  # fmt: skip
        for _ in range(REPEATS):
            timed(probe_argv, what="probe")
        fixed, fixed_cpu = sr - sb, cpu("runner-short") - cpu("plain-short")
        print(f"plain ffmpeg {sb:.3f} s   runner {sr:.3f} s   fixed cost {fixed:.3f} s "
              f"= {fixed / b:.3f} of plain ffmpeg on {SECONDS_OF_AUDIO} s; in CPU "
              f"{fixed_cpu:.3f} s = {fixed_cpu / cpu('plain'):.3f}")  # fmt: skip
        # In CPU seconds: the wall clock of a part this small is mostly the machine's other load.
        parts = {
            "interpreter start": cpu("start"),
            "the runner's imports (beyond start)": cpu("imports") - cpu("start"),
            "ffprobe x2 (input, output)": 2 * cpu("probe"),
        }
        parts["the rest (payload, threads, store, message)"] = fixed_cpu - sum(parts.values())
        print("the fixed cost's parts, CPU seconds (medians):")
        for name, seconds in parts.items():
            print(f"  {name:46s} {seconds:7.3f} s  {seconds / max(fixed_cpu, 1e-9):6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
