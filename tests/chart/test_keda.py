"""KEDA for real: the KEDA operator (built from the Go module proxy) scales the chart's
controller Deployment 0 → 1 when rows are pending and back to 0 once the queue drains and the
cooldown passes, polling queue-metrics over HTTP. The controller's pods are simulated by kwok;
queue-metrics runs on the host (there is no pod network here), so the test points the chart's
ScaledObject at it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from controller.settings import DbSettings
from controller.store import JobStore
from devcluster.controlplane import LocalCluster, binary, free_port
from devcluster.procs import terminate
from tests.chart.test_chart import CHART, helm
from tests.chart.test_crds import CRDS
from tests.helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keda_crds(cluster: LocalCluster) -> None:
    for f in sorted(CRDS.glob("keda.sh_*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(f))
    wait_for(
        lambda: (
            "True"
            in cluster.kubectl(
                "get",
                "crd",
                "scaledobjects.keda.sh",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
            ).stdout
        ),
        timeout=60,
        message="ScaledObject CRD established",
    )


@pytest.fixture
def keda(
    cluster: LocalCluster, keda_crds: None, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    # KEDA serves its (unused here) webhooks and metrics over TLS; a cert for 127.0.0.1 from
    # the control plane's own CA will do.
    certs = tmp_path / "keda-certs"
    certs.mkdir()
    for src, dst in (
        ("apiserver.crt", "tls.crt"),
        ("apiserver.key", "tls.key"),
        ("ca.crt", "ca.crt"),
    ):
        shutil.copy(cluster.pki / src, certs / dst)
    env = os.environ | {
        "KUBECONFIG": str(cluster.kubeconfig),
        "WATCH_NAMESPACE": "",
        "KEDA_CLUSTER_OBJECT_NAMESPACE": "default",
    }
    log = (tmp_path / "keda.log").open("wb")
    proc = subprocess.Popen(
        [
            str(binary("keda-operator")),
            f"--cert-dir={certs}",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}",
            f"--metrics-service-bind-address=127.0.0.1:{free_port()}",
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
            f"--ca-dir={certs}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield proc
    terminate(proc, timeout=15)


@pytest.fixture
def queue_metrics(tmp_path: Path) -> Iterator[tuple[str, DbSettings]]:
    db = DbSettings(url=f"file:{tmp_path / 'jobs.db'}")
    with queue_metrics_process(db.url) as url:
        yield url, db


@contextlib.contextmanager
def queue_metrics_process(db_url: str) -> Iterator[str]:
    """queue-metrics on the host (KEDA, also on the host, cannot reach a Service); yields the
    URL of its /queue."""
    port = free_port()
    env = os.environ | {
        "TURSO_DATABASE_URL": db_url,
        "AUDIOJOB_QUEUE_METRICS_PORT": str(port),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.queue_metrics"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}/queue"
    finally:
        proc.terminate()
        proc.wait(15)


def replicas(apps: kubernetes.client.AppsV1Api, name: str, ns: str) -> int:
    return int(apps.read_namespaced_deployment(name, ns).spec.replicas or 0)


def wait_replicas(apps: kubernetes.client.AppsV1Api, name: str, ns: str, n: int, why: str) -> None:
    wait_for(lambda: replicas(apps, name, ns) == n, timeout=120, interval=0.5, message=why)


def test_keda_scales_the_controller_from_zero_and_back(
    cluster: LocalCluster,
    namespace: str,
    api: kubernetes.client.ApiClient,
    keda: subprocess.Popen[bytes],
    queue_metrics: tuple[str, DbSettings],
) -> None:
    url, db = queue_metrics
    release = "kd"
    kc = f"--kubeconfig={cluster.kubeconfig}"
    helm(
        "install",
        release,
        str(CHART),
        f"--namespace={namespace}",
        kc,
        "--set=database.url=libsql://example.invalid",
        "--set=keda.enabled=true",
        "--set=keda.pollingInterval=1",
        "--set=keda.cooldownPeriod=5",
    )
    custom = kubernetes.client.CustomObjectsApi(api)
    apps = kubernetes.client.AppsV1Api(api)
    so_name = deploy = f"{release}-audiojob-operator-controller"
    so = custom.get_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects", so_name
    )
    trigger = so["spec"]["triggers"][0]
    trigger["metadata"]["url"] = url
    custom.patch_namespaced_custom_object(
        "keda.sh",
        "v1alpha1",
        namespace,
        "scaledobjects",
        so_name,
        {"spec": {"triggers": [trigger]}},
    )

    # Empty queue: KEDA takes the controller down to zero.
    wait_replicas(apps, deploy, namespace, 0, "controller scaled to 0 on an empty queue")

    async def insert() -> None:
        async with await JobStore.open(db) as store:
            await store.insert(job_id="wake-up", type="ingest", payload={"url": "https://x/a"})

    asyncio.run(insert())
    t_insert = time.monotonic()
    wait_replicas(apps, deploy, namespace, 1, "controller scaled 0 → 1 by a pending row")

    up = time.monotonic() - t_insert

    async def claim() -> tuple[str, int]:
        async with await JobStore.open(db) as store:
            job = (await store.claim(worker_id="test", limit=1)).jobs[0].row
            return job.job_id, job.attempt

    async def complete(job_id: str, attempt: int) -> None:
        async with await JobStore.open(db) as store:
            await store.complete(job_id, attempt, {"ok": 1})

    # Claimed but not finished: nothing is pending, yet KEDA must keep the controller up
    # through more than a cooldown, or the running job's outcome would go unrecorded.
    job_id, attempt = asyncio.run(claim())
    seen = set()
    deadline = time.monotonic() + 5 + 5  # cooldownPeriod + 5 polls
    while time.monotonic() < deadline:
        seen.add(replicas(apps, deploy, namespace))
        time.sleep(0.5)
    assert seen == {1}, f"controller replicas while a job was in flight: {sorted(seen)}"

    asyncio.run(complete(job_id, attempt))
    t_drained = time.monotonic()
    wait_replicas(
        apps,
        deploy,
        namespace,
        0,
        "controller scaled back to 0 after the queue drained and the cooldown",
    )
    # Reported with -s; the timings depend on pollingInterval=1 and cooldownPeriod=5.
    down = time.monotonic() - t_drained
    print(f"KEDA: 0 → 1 {up:.1f} s after the insert, 1 → 0 {down:.1f} s after the drain")
    # No hooks: the uninstall hook's pod would wait on a simulated node (the real node
    # runs it: tests/realnode/test_release.py).
    helm("uninstall", release, f"--namespace={namespace}", kc, "--no-hooks")
