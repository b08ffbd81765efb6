"""The local control plane is real: Jobs make pods, kwok plays them out as asked, RBAC and
admission (incl. CEL policies) are enforced, helm installs, and start/stop leaves nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from devcluster.controlplane import LocalCluster, binary
from devcluster.pki import write_kubeconfig
from devcluster.procs import pid_alive
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster
HERE = Path(__file__).parent


def job(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}, "labels": {"test": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 3,
                    "containers": [{"name": "main", "image": "example.invalid/runner:1"}],
                },
            },
        },
    }


def only_pod(core: kubernetes.client.CoreV1Api, ns: str, name: str) -> Any:
    pods = core.list_namespaced_pod(ns, label_selector=f"test={name}").items
    return pods[0] if len(pods) == 1 else None


def test_job_pod_succeeds_by_default(namespace, core_v1, batch_v1):
    batch_v1.create_namespaced_job(namespace, job("ok"))
    pod = wait_for(
        lambda: (p := only_pod(core_v1, namespace, "ok")) and p.status.phase == "Succeeded" and p,
        timeout=60,
        message="pod Succeeded",
    )
    assert pod.spec.node_name.startswith("kwok-node-")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    wait_for(
        lambda: (
            (batch_v1.read_namespaced_job(name="ok", namespace=namespace).status.succeeded or 0)
            == 1
        ),
        timeout=60,
        message="Job succeeded",
    )


def test_job_pod_fails_with_chosen_exit_code_and_message(namespace, core_v1, batch_v1):
    message = json.dumps({"ok": False, "error": "source answered 404", "kind": "permanent"})
    batch_v1.create_namespaced_job(
        namespace,
        job(
            "bad",
            {
                "audiojob.dev/sim-outcome": "fail",
                "audiojob.dev/sim-exit-code": "65",
                "audiojob.dev/sim-reason": "Error",
                "audiojob.dev/sim-message": message,
            },
        ),
    )
    pod = wait_for(
        lambda: (p := only_pod(core_v1, namespace, "bad")) and p.status.phase == "Failed" and p,
        timeout=60,
        message="pod Failed",
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (65, "Error", message)
    wait_for(
        lambda: any(
            c.type == "Failed" and c.status == "True"
            for c in batch_v1.read_namespaced_job("bad", namespace).status.conditions or []
        ),
        timeout=60,
        message="Job Failed condition",
    )


def test_pod_runs_for_the_given_time(namespace, core_v1, batch_v1):
    batch_v1.create_namespaced_job(namespace, job("slow", {"audiojob.dev/sim-duration": "3s"}))
    running = wait_for(
        lambda: (p := only_pod(core_v1, namespace, "slow")) and p.status.phase == "Running" and p,
        timeout=60,
        message="pod Running",
    )
    started = running.status.container_statuses[0].state.running.started_at
    done = wait_for(
        lambda: (p := only_pod(core_v1, namespace, "slow")) and p.status.phase == "Succeeded" and p,
        timeout=60,
        message="pod Succeeded",
    )
    finished = done.status.container_statuses[0].state.terminated.finished_at
    assert (finished - started).total_seconds() >= 2.5


def test_waiting_pod_reports_reason(namespace, core_v1, batch_v1):
    batch_v1.create_namespaced_job(
        namespace,
        job(
            "pull",
            {
                "audiojob.dev/sim-outcome": "waiting",
                "audiojob.dev/sim-reason": "ImagePullBackOff",
                "audiojob.dev/sim-message": "Back-off pulling image",
            },
        ),
    )
    waiting = wait_for(
        lambda: (
            (p := only_pod(core_v1, namespace, "pull"))
            and p.status.container_statuses
            and p.status.container_statuses[0].state.waiting
            and p.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
            and p.status.container_statuses[0].state.waiting
        ),
        timeout=60,
        message="ImagePullBackOff",
    )
    assert waiting.message == "Back-off pulling image"
    assert only_pod(core_v1, namespace, "pull").status.phase == "Pending"


def test_hanging_pod_is_deleted_after_its_grace_period(namespace, core_v1, batch_v1):
    batch_v1.create_namespaced_job(namespace, job("hang", {"audiojob.dev/sim-outcome": "hang"}))
    pod = wait_for(
        lambda: (p := only_pod(core_v1, namespace, "hang")) and p.status.phase == "Running" and p,
        timeout=60,
        message="pod Running",
    )
    core_v1.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=3)
    # The simulated runner ignores SIGTERM: the pod must still be there, terminating, until
    # the grace period is over, then it is killed (137) and removed.
    terminating = core_v1.read_namespaced_pod(pod.metadata.name, namespace)
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 3
    seen_phases: set[str] = set()

    def gone() -> bool:
        try:
            p = core_v1.read_namespaced_pod(pod.metadata.name, namespace)
        except ApiException as e:
            return e.status == 404
        seen_phases.add(p.status.phase)
        return False

    wait_for(gone, timeout=60, interval=0.05, message="pod removed")
    assert time.time() >= terminating.metadata.deletion_timestamp.timestamp() - 0.5
    assert "Running" in seen_phases


def test_pod_that_exits_on_sigterm_goes_before_the_grace_period(namespace, core_v1, batch_v1):
    batch_v1.create_namespaced_job(
        namespace,
        job("polite", {"audiojob.dev/sim-outcome": "hang", "audiojob.dev/sim-term-delay": "200ms"}),
    )
    pod = wait_for(
        lambda: (p := only_pod(core_v1, namespace, "polite")) and p.status.phase == "Running" and p,
        timeout=60,
        message="pod Running",
    )
    core_v1.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=120)
    terminated = wait_for(
        lambda: (
            (p := core_v1.read_namespaced_pod(pod.metadata.name, namespace))
            and p.status.phase == "Failed"
            and p.status.container_statuses[0].state.terminated
        ),
        timeout=60,
        message="pod terminated by SIGTERM",
    )
    assert terminated.exit_code == 143


def test_rbac_denies_a_service_account_without_rights(cluster, namespace, core_v1):
    core_v1.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core_v1.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    kubeconfig = cluster.root / f"nobody-{namespace}.kubeconfig"
    write_kubeconfig(kubeconfig, server=cluster.server, ca_file=cluster.ca_file, token=token)
    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    with pytest.raises(ApiException) as denied:
        kubernetes.client.CoreV1Api(client).list_namespaced_pod(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in denied.value.body


def test_validating_admission_policy_with_cel_rejects(cluster, namespace, api, core_v1):
    policy_name = f"no-forbidden-{namespace}"
    adm = kubernetes.client.AdmissionregistrationV1Api(api)
    adm.create_validating_admission_policy(
        {
            "metadata": {"name": policy_name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.data) || !('forbidden' in object.data)",
                        "message": "configmaps may not carry a 'forbidden' key",
                    }
                ],
            },
        }
    )
    adm.create_validating_admission_policy_binding(
        {
            "metadata": {"name": policy_name},
            "spec": {
                "policyName": policy_name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    try:
        core_v1.create_namespaced_config_map(
            namespace, {"metadata": {"name": "fine"}, "data": {"ok": "1"}}
        )

        def rejected() -> bool:
            try:
                core_v1.create_namespaced_config_map(
                    namespace, {"metadata": {"generateName": "bad-"}, "data": {"forbidden": "1"}}
                )
            except ApiException as e:
                assert e.status == 422, e.body
                assert "configmaps may not carry a 'forbidden' key" in e.body
                return True
            return False

        # The policy is compiled asynchronously after it is created.
        wait_for(rejected, timeout=30, interval=0.5, message="the CEL policy to reject")
    finally:
        adm.delete_validating_admission_policy_binding(policy_name)
        adm.delete_validating_admission_policy(policy_name)


def test_helm_install_of_a_tiny_chart(cluster, namespace, core_v1):
    result = subprocess.run(
        [
            str(binary("helm")),
            "install",
            "demo",
            str(HERE / "testdata" / "tiny-chart"),
            "--namespace",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--set",
            "greeting=hi",
            "--wait",
            "--timeout",
            "60s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    cm = core_v1.read_namespaced_config_map("demo-tiny", namespace)
    assert cm.data == {"greeting": "hi"}
    listed = subprocess.run(
        [
            str(binary("helm")),
            "list",
            "-n",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [r["status"] for r in json.loads(listed.stdout)] == ["deployed"]


@pytest.mark.slow
def test_start_and_stop_twice_leaves_nothing_behind():
    for _ in range(2):
        cluster = LocalCluster(nodes=1)
        cluster.start()
        pids = [p.pid for p in cluster.procs.values()]
        state = cluster.root
        assert len(pids) == 5 and all(pid_alive(p) for p in pids)
        core = kubernetes.client.CoreV1Api(cluster.api_client())
        assert core.read_namespaced_service_account("default", "default")
        cluster.stop()
        assert not [p for p in pids if pid_alive(p)]
        assert not state.exists()
