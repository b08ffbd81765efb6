"""The chart's KEDA ScaledObject and ServiceMonitor, validated by a real API server against
the real CRDs (KEDA and prometheus-operator, fetched from the Go module proxy by
`make binaries` into ~/.cache/audiojob-operator/crds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from devcluster.controlplane import LocalCluster
from tests.chart.test_chart import render
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster
CRDS = Path(os.environ.get("AUDIOJOB_CACHE", Path.home() / ".cache" / "audiojob-operator")) / "crds"


@pytest.fixture(scope="module")
def crds(cluster: LocalCluster) -> None:
    files = sorted(CRDS.glob("*.yaml"))
    assert files, f"no CRDs in {CRDS}: run `make binaries`"
    for f in files:
        cluster.kubectl("apply", "--server-side", "-f", str(f))
    for f in files:
        name = yaml.safe_load(f.read_text())["metadata"]["name"]
        wait_for(
            lambda n=name: (
                "True"
                in cluster.kubectl(
                    "get",
                    "crd",
                    n,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                ).stdout
            ),
            timeout=60,
            message=f"CRD {name} established",
        )


def test_scaled_object_and_service_monitor_pass_server_side_validation(
    cluster: LocalCluster, namespace: str, crds: None
) -> None:
    rendered = render(
        "keda.enabled=true",
        "serviceMonitor.enabled=true",
        "database.authToken=not-a-real-token",
        namespace=namespace,
        release="kd",
    )
    proc = cluster.kubectl(
        "apply",
        "--dry-run=server",
        f"--namespace={namespace}",
        "-f",
        "-",
        input=rendered,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "scaledobject.keda.sh/kd-audiojob-operator" in proc.stdout
    assert "servicemonitor.monitoring.coreos.com/" in proc.stdout


def test_a_broken_scaled_object_is_rejected_by_the_crd_schema(
    cluster: LocalCluster, namespace: str, crds: None
) -> None:
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "bad"},
        "spec": {"scaleTargetRef": {"name": "x"}, "minReplicaCount": "zero", "triggers": []},
    }
    proc = cluster.kubectl(
        "apply",
        "--dry-run=server",
        f"--namespace={namespace}",
        "-f",
        "-",
        input=yaml.safe_dump(bad),
        check=False,
    )
    assert proc.returncode != 0 and "minReplicaCount" in proc.stderr, proc.stderr
