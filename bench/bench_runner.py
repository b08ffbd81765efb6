"""The runner's overhead against plain ffmpeg on the same transcode, as a ratio from one run.

Both sides turn the same 10-minute stereo WAV into 192 kb/s MP3. The runner adds Python start-up,
two ffprobe passes, progress parsing, the reporter thread and the atomic store; the ratio says
what that costs relative to the work itself. Medians of alternating repeats damp noise from
other processes on the machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3
SECONDS_OF_AUDIO = 600


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, capture_output=True, timeout=600)
    return time.perf_counter() - start


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        root = Path(tmp)
        out_dir = root / "out"
        out_dir.mkdir()
        source = out_dir / "in.wav"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
             "-i", f"sine=frequency=440:sample_rate=44100:duration={SECONDS_OF_AUDIO}",
             "-ac", "2", str(source)],
            check=True, timeout=300,
        )  # fmt: skip
        plain = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c:a", "libmp3lame",
                 "-b:a", "192k", "-ar", "44100", "-f", "mp3", str(root / "plain.mp3")]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "KUBECONFIG")}
        env.update(
            AUDIOJOB_ID="bench",
            AUDIOJOB_TYPE="save",
            AUDIOJOB_PAYLOAD=json.dumps({"input": "in.wav", "format": "mp3"}),
            AUDIOJOB_OUTPUT=str(out_dir),
            AUDIOJOB_TERMINATION_LOG=str(root / "termination-log"),
            PYTHONPATH=str(REPO),
        )
        runner = [sys.executable, "-m", "runner"]
        baseline, ours = [], []
        for _ in range(REPEATS):
            baseline.append(timed(plain))
            ours.append(timed(runner, env))
        result = json.loads((root / "termination-log").read_text())
        assert result["ok"], result

    b, r = statistics.median(baseline), statistics.median(ours)
    print(f"plain ffmpeg: {b:.2f} s   runner: {r:.2f} s   (median of {REPEATS}, "
          f"{SECONDS_OF_AUDIO} s WAV -> 192k MP3)")  # fmt: skip
    print(f"runner overhead ratio: {r / b:.3f}x plain ffmpeg (+{r - b:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
