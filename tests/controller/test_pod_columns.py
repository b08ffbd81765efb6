"""`kubectl get pods` that means something: a runner pod made from `build_job`'s template, with
the runner's stage and progress annotations, shown through the custom columns of
docs/operations.md."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest

from controller.builders import build_job
from controller.names import job_key
from controller.settings import load_settings
from devcluster.controlplane import LocalCluster
from runner import contract as c

pytestmark = pytest.mark.cluster
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_the_readme_gives_the_columns_the_code_defines() -> None:
    assert f"-o custom-columns='{c.POD_COLUMNS}'" in OPERATIONS.read_text()


def test_custom_columns_show_job_type_stage_and_progress(
    cluster: LocalCluster, namespace: str, core_v1: kubernetes.client.CoreV1Api
) -> None:
    job_id = "Song 42/Final Mix (v2).wav"
    job = build_job(
        job_id=job_id,
        job_type="ingest",
        attempt=2,
        trace_id="t",
        payload_json="{}",
        settings=load_settings(kube={"namespace": namespace}),
    )
    template = job["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job['metadata']['name']}-x7k2p",
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"]
            | {c.ANN_STAGE: "transcoding", c.ANN_PROGRESS: "63"},
        },
        # Held Pending (a node that does not exist): only the columns matter here.
        "spec": template["spec"] | {"nodeName": "no-such-node", "serviceAccountName": "default"},
    }
    core_v1.create_namespaced_pod(namespace, pod)
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", c.LABEL_MANAGED_BY + "=" + c.LABEL_MANAGED_BY_VALUE,
        "-o", f"custom-columns={c.POD_COLUMNS}",
    ).stdout  # fmt: skip
    header, line = out.splitlines()
    assert header.split() == ["POD", "JOB", "TYPE", "TRY", "PHASE", "STAGE", "PROGRESS"]
    key = job_key(job_id)
    assert key.startswith("song-42-final-mix-v2-wav-") and len(key) <= 63
    assert line.split() == [
        pod["metadata"]["name"],
        key,
        "ingest",
        "2",
        "Pending",
        "transcoding",
        "63",
    ]
