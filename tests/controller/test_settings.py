"""Settings that would break what ties a pod to its row stop start-up with one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
