"""What both processes export passes `promtool check metrics` (Prometheus' own naming lint),
and the metrics table of docs/operations.md lists exactly the `audiojob_*` names they export."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client import REGISTRY, generate_latest

import controller.engine.loop  # noqa: F401  # registers every controller metric
from controller.queue_metrics import DB_REGISTRY_KEY, REGISTRY_KEY, QueueCounter, build_app
from controller.settings import DbSettings
from devcluster.controlplane import binary

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def exported(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (audiojob_\w+) ", text, re.M))


def documented() -> set[str]:
    names: set[str] = set()
    for line in OPERATIONS.read_text().splitlines():
        if line.startswith("| `audiojob_"):
            names.update(re.findall(r"`(audiojob_\w+)`", line.split("|")[1]))
    return names


def exposition(tmp_path: Path) -> tuple[str, str]:
    app = build_app(QueueCounter(DbSettings(url=f"file:{tmp_path / 'jobs.db'}")))
    queue = b"".join(generate_latest(app[k]) for k in (REGISTRY_KEY, DB_REGISTRY_KEY))
    return generate_latest(REGISTRY).decode(), queue.decode()


def test_promtool_finds_nothing_to_lint(tmp_path: Path) -> None:
    for text in exposition(tmp_path):
        proc = subprocess.run(
            [str(binary("promtool")), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_the_readme_table_lists_exactly_what_is_exported(tmp_path: Path) -> None:
    controller, queue = exposition(tmp_path)
    assert documented() == exported(controller) | exported(queue)
