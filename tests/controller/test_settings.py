"""Settings that would break what ties a pod to its row stop start-up with one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from controller.builders import build_job
from controller.settings import SettingsError, load_settings
from runner import contract as c


@pytest.mark.parametrize("key", sorted(c.MANAGED_ANNOTATIONS))
def test_managed_pod_annotations_cannot_be_overridden(key: str) -> None:
    with pytest.raises(SettingsError) as e:
        load_settings(runner={"pod_annotations": {key: "other-row", "team": "audio"}})
    assert str(e.value) == (
        f"invalid setting AUDIOJOB_RUNNER__POD_ANNOTATIONS: Value error, {key} is set by the "
        "controller to tie a pod to its row; remove it from the extra pod annotations"
    )


def test_extra_pod_annotations_sit_beside_the_managed_ones() -> None:
    settings = load_settings(runner={"pod_annotations": {"team": "audio"}})
    job = build_job(
        job_id="j", job_type="ingest", attempt=1, trace_id="t", payload_json="{}", settings=settings
    )
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"team": "audio", c.ANN_JOB_ID: "j", c.ANN_TRACE_ID: "t"}


def test_the_controller_refuses_to_start_with_an_overridden_job_id() -> None:
    env = os.environ | {
        "AUDIOJOB_RUNNER__POD_ANNOTATIONS": json.dumps({c.ANN_JOB_ID: "x"}),
        "AUDIOJOB_DB__URL": "file:/nonexistent/never-opened.db",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "controller"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "audiojob-controller: invalid setting AUDIOJOB_RUNNER__POD_ANNOTATIONS: Value error, "
        f"{c.ANN_JOB_ID} is set by the controller to tie a pod to its row; remove it from the "
        "extra pod annotations"
    ]


def runner_pod_spec() -> dict[str, Any]:
    """The pod spec of a Job built with the settings the environment gives."""
    job = build_job(
        job_id="j", job_type="ingest", attempt=1, trace_id="t", payload_json="{}",
        settings=load_settings(),
    )  # fmt: skip
    return dict(job["spec"]["template"]["spec"])


def test_runner_placement_from_the_environment_reaches_the_pod_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """nodeSelector, tolerations and affinity, set as the chart sets them (JSON env vars)."""
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    toleration = {"key": "audio", "operator": "Exists", "effect": "NoSchedule"}
    monkeypatch.setenv("AUDIOJOB_RUNNER__NODE_SELECTOR", json.dumps({"pool": "audio"}))
    monkeypatch.setenv("AUDIOJOB_RUNNER__TOLERATIONS", json.dumps([toleration]))
    monkeypatch.setenv("AUDIOJOB_RUNNER__AFFINITY", json.dumps(affinity))
    spec = runner_pod_spec()
    assert spec["nodeSelector"] == {"pool": "audio"}
    assert spec["tolerations"] == [toleration]
    assert spec["affinity"] == affinity


def test_runner_pods_without_placement_carry_none() -> None:
    spec = runner_pod_spec()
    assert not {"nodeSelector", "tolerations", "affinity"} & set(spec)
