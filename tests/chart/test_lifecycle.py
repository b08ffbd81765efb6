"""`helm upgrade` while jobs run never touches a job pod; `helm uninstall` leaves nothing
cluster-scoped behind."""

from __future__ import annotations

import kubernetes
import pytest

from controller.builders import build_job
from controller.settings import load_settings
from devcluster.controlplane import LocalCluster
from tests.chart.test_chart import CHART, helm
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster


def cluster_scoped_with_release(api: kubernetes.client.ApiClient, release: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    adm = kubernetes.client.AdmissionregistrationV1Api(api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    found = [
        f"vap/{p.metadata.name}"
        for p in adm.list_validating_admission_policy(label_selector=selector).items
    ]
    found += [
        f"vapb/{b.metadata.name}"
        for b in adm.list_validating_admission_policy_binding(label_selector=selector).items
    ]
    found += [
        f"clusterrole/{r.metadata.name}"
        for r in rbac.list_cluster_role(label_selector=selector).items
    ]
    found += [
        f"clusterrolebinding/{r.metadata.name}"
        for r in rbac.list_cluster_role_binding(label_selector=selector).items
    ]
    return found


def test_upgrade_keeps_running_job_pods_and_uninstall_cleans_up(
    cluster: LocalCluster,
    namespace: str,
    api: kubernetes.client.ApiClient,
    core_v1: kubernetes.client.CoreV1Api,
    batch_v1: kubernetes.client.BatchV1Api,
) -> None:
    release = "up"
    kc = f"--kubeconfig={cluster.kubeconfig}"
    helm(
        "install",
        release,
        str(CHART),
        f"--namespace={namespace}",
        kc,
        "--set=database.url=libsql://example.invalid",
    )
    assert cluster_scoped_with_release(api, release), "the admission policy should be installed"

    settings = load_settings(kube={"namespace": namespace})
    body = build_job(
        job_id="long-render",
        job_type="save",
        attempt=1,
        trace_id="t",
        payload_json="{}",
        settings=settings,
    )
    body["spec"]["template"]["metadata"]["annotations"]["audiojob.dev/sim-outcome"] = "hang"
    body["spec"]["template"]["spec"]["serviceAccountName"] = "default"
    body["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 10001}
    batch_v1.create_namespaced_job(namespace, body)
    label = "audiojob.dev/job-key"
    selector = f"{label}={body['metadata']['labels'][label]}"
    pod = wait_for(
        lambda: (
            (ps := core_v1.list_namespaced_pod(namespace, label_selector=selector).items)
            and ps[0].status.phase == "Running"
            and ps[0]
        ),
        timeout=60,
        message="the job pod Running",
    )

    helm(
        "upgrade",
        release,
        str(CHART),
        f"--namespace={namespace}",
        kc,
        "--set=database.url=libsql://example.invalid",
        "--set=controller.logLevel=DEBUG",
        "--set=timeouts.ingestSeconds=900",
    )
    after = core_v1.read_namespaced_pod(pod.metadata.name, namespace)
    assert after.metadata.uid == pod.metadata.uid
    assert after.metadata.deletion_timestamp is None and after.status.phase == "Running"

    # No hooks: the uninstall hook's pod would wait on a simulated node (the real node
    # runs it: tests/realnode/test_release.py).
    helm("uninstall", release, f"--namespace={namespace}", kc, "--no-hooks")
    assert cluster_scoped_with_release(api, release) == []
    # Job pods are the app's work, not the chart's: uninstalling does not kill them.
    assert (
        core_v1.read_namespaced_pod(pod.metadata.name, namespace).metadata.deletion_timestamp
        is None
    )
