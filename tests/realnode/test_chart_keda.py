"""The whole "used-by" line for real: `helm install` of the chart with the image from
`make image` (pullPolicy Never), the controller running as a pod on the real node, KEDA scaling
it 0 → 1 on a pending row, the job running as a real pod and completing, and KEDA taking the
controller back to 0. The database is the libSQL test server on the bridge address (pods reach
it like Turso); KEDA and queue-metrics run on the host as in tests/chart/test_keda.py (a pod's
Service name does not resolve on the host)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from controller.settings import DbSettings
from controller.store import JobRow, JobStore
from devcluster.controlplane import LocalCluster
from devcluster.hrana_server import HranaServer, running_server
from devcluster.node import RealNode
from tests.chart.test_keda import keda, keda_crds, queue_metrics_process, wait_replicas
from tests.helpers import wait_for
from tests.realnode.conftest import OutputVolume, helm_installed, real_chart_values, tone_url
from tests.runner.conftest import MediaServer

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]
__all__ = ["keda", "keda_crds"]
TERMINAL = ("complete", "failed", "cancelled")  # KEDA's operator on the host, and its CRDs


@pytest.fixture
def database(realnode: RealNode, tmp_path: Path) -> Iterator[HranaServer]:
    """The job table behind a libSQL server on the bridge address."""
    with running_server(str(tmp_path / "jobs.db"), host=realnode.network.gateway) as server:
        yield server


@pytest.fixture
def release(
    realnode: RealNode,
    namespace: str,
    database: HranaServer,
    output_volume: OutputVolume,
    tmp_path: Path,
) -> Iterator[str]:
    """The chart installed by helm: image from `make image` (pullPolicy Never), the controller
    and its job pods on the real node, the database on the bridge, KEDA on."""
    values = real_chart_values(
        realnode, database_url=database.url("libsql"), claim=output_volume.claim
    )
    values["keda"] = {"enabled": True, "pollingInterval": 1, "cooldownPeriod": 5}
    with helm_installed(realnode, namespace, values, tmp_path / "values.json") as release:
        yield release


def test_helm_install_keda_and_a_real_job(
    *,
    cluster: LocalCluster,
    namespace: str,
    keda: subprocess.Popen[bytes],
    release: str,
    database: HranaServer,
    node_media_server: MediaServer,
    output_volume: OutputVolume,
) -> None:
    api = cluster.api_client()
    apps = kubernetes.client.AppsV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    deploy = f"{release}-audiojob-operator-controller"
    db = DbSettings(url=database.url("libsql"))
    url = tone_url(node_media_server, output_volume.host_dir.parent, seconds=5)

    with queue_metrics_process(db.url) as queue_url:
        point_scaled_object_at(api, namespace, deploy, queue_url)
        wait_replicas(apps, deploy, namespace, 0, "controller scaled to 0 on an empty queue")
        asyncio.run(insert(db, "the-line", {"url": url}))
        t_insert = time.monotonic()
        wait_replicas(apps, deploy, namespace, 1, "controller scaled 0 → 1 by a pending row")
        up = time.monotonic() - t_insert
        pod = wait_for(
            lambda: next(
                p
                for p in core.list_namespaced_pod(
                    namespace, label_selector="app.kubernetes.io/component=controller"
                ).items
                if p.status.phase == "Running"
            ),
            timeout=120,
            message="the controller pod running",
        )
        assert pod.spec.node_name == "audiojob-realnode"
        row = wait_for(
            lambda: (r := asyncio.run(get(db, "the-line"))) and r.status in TERMINAL and r,
            timeout=240,
            interval=0.5,
            message="the row finished by the controller pod",
        )  # fmt: skip
        assert row.status == "complete", row
        result = json.loads(row.result or "{}")
        assert abs(result["duration"] - 5) < 0.2, result
        written = output_volume.host_dir / Path(result["output"]).relative_to("/data/output")
        assert written.stat().st_size == result["size"]
        # Issue 18: under the chart's own ServiceAccount and Role, on the real node, the
        # controller's first minutes (start, claim, run, outcome) log no WARNING or ERROR line.
        log = core.read_namespaced_pod_log(pod.metadata.name, namespace, container="controller")
        loud = [line for line in log.splitlines() if is_loud(line)]
        assert log.strip() and loud == [], loud
        t_done = time.monotonic()
        wait_replicas(apps, deploy, namespace, 0, "controller scaled back to 0 after the drain")
        down = time.monotonic() - t_done
    print(f"KEDA, controller as a pod: 0 → 1 in {up:.1f}s, row complete, 1 → 0 {down:.1f}s after")


def is_loud(line: str) -> bool:
    """A WARNING or ERROR line: ours are JSON with a `level`, anything else is judged by its
    text (a traceback or a library's own logging)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return "WARNING" in line or "ERROR" in line or "Traceback" in line
    return str(entry.get("level", "")).lower() in ("warning", "error", "critical")


def point_scaled_object_at(
    api: kubernetes.client.ApiClient, namespace: str, name: str, url: str
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    args = ("keda.sh", "v1alpha1", namespace, "scaledobjects", name)
    trigger = custom.get_namespaced_custom_object(*args)["spec"]["triggers"][0]
    trigger["metadata"]["url"] = url
    custom.patch_namespaced_custom_object(*args, {"spec": {"triggers": [trigger]}})


async def insert(db: DbSettings, job_id: str, payload: dict[str, str]) -> None:
    async with await JobStore.open(db) as store:
        await store.insert(job_id=job_id, type="ingest", payload=payload)


async def get(db: DbSettings, job_id: str) -> JobRow | None:
    async with await JobStore.open(db) as store:
        return await store.get(job_id)
