"""The alert rules the chart ships: valid for Prometheus (`promtool check rules`), each one
fires in its unit test (`promtool test rules`), and each has a runbook section."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from devcluster.controlplane import binary

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "audiojob-operator" / "files" / "alerts.yaml"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
RUNBOOKS = ROOT / "docs" / "operations.md"


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary("promtool")), *args], capture_output=True, text=True, check=False
    )


def test_promtool_checks_the_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in proc.stdout, proc.stdout


def test_every_alert_fires_in_its_promtool_unit_test() -> None:
    proc = promtool("test", "rules", str(UNIT_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == {a["alert"] for a in alerts()}


def test_promtool_unit_tests_fail_when_an_alert_does_not_fire(tmp_path: Path) -> None:
    """The unit tests can fail: expecting an alert that the input does not raise is an error."""
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [str(RULES)]
    for case in tests["tests"][0]["alert_rule_test"]:
        case["eval_time"] = "1m"  # before its `for` has passed
    broken = tmp_path / "broken_test.yaml"
    broken.write_text(yaml.safe_dump(tests))
    proc = promtool("test", "rules", str(broken))
    assert proc.returncode != 0 and "AudiojobBacklogNotDraining" in proc.stdout + proc.stderr


def test_every_alert_has_a_runbook_section_and_links_to_it() -> None:
    headings = {m.group(1) for m in re.finditer(r"^### (Audiojob\w+)$", RUNBOOKS.read_text(), re.M)}
    for rule in alerts():
        name = str(rule["alert"])
        assert name in headings, f"docs/operations.md has no '### {name}' runbook"
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["runbook"] == f"docs/operations.md#{name.lower()}"
