"""The chart's admission policy against a token the kubelet itself issued to a running pod
(projected into the pod's volume, bound to the pod): the runner's identity may annotate its own
pod's progress keys and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest

from devcluster.controlplane import LocalCluster
from devcluster.node import RealNode
from devcluster.node.realnode import WORK
from tests.chart.test_chart import RUNNER_SA, client_with_token, installed
from tests.helpers import wait_for
from tests.realnode.conftest import pause_pod, run_pod

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]
__all__ = ["installed"]  # the chart, installed by helm into the test's namespace


def runner_pod(node: RealNode, name: str) -> dict[str, Any]:
    pod = pause_pod(node, name=name)
    pod["spec"] |= {"serviceAccountName": RUNNER_SA, "automountServiceAccountToken": True}
    return pod


def kubelet_token(uid: str) -> str:
    """The token the kubelet wrote into the pod's projected service-account volume."""
    volumes = WORK / "kubelet" / "pods" / uid / "volumes" / "kubernetes.io~projected"
    token: Path = wait_for(
        lambda: next(volumes.glob("kube-api-access-*/token"), None),
        timeout=30,
        message=f"the kubelet's token for pod {uid}",
    )
    return token.read_text()


def refused(call: Any) -> str:
    try:
        call()
    except kubernetes.client.ApiException as e:
        if e.status in (403, 422):
            return str(e.body)
        raise
    raise AssertionError("the request was admitted")


def test_a_kubelet_issued_runner_token_patches_only_its_own_progress(
    cluster: LocalCluster,
    realnode: RealNode,
    namespace: str,
    installed: str,
    core_v1: kubernetes.client.CoreV1Api,
) -> None:
    mine, _ = run_pod(core_v1, namespace, runner_pod(realnode, "runner-mine"))
    run_pod(core_v1, namespace, runner_pod(realnode, "runner-other"))
    token = kubelet_token(mine.metadata.uid)

    def annotate(key: str, value: str) -> dict[str, Any]:
        return {"metadata": {"annotations": {key: value}}}

    with client_with_token(cluster, token) as api:
        core = kubernetes.client.CoreV1Api(api)
        # The policy becomes active about a second after helm created it.
        other = wait_for(
            lambda: refused(
                lambda: core.patch_namespaced_pod(
                    "runner-other", namespace, annotate("audiojob.dev/progress", "1")
                )
            ),
            timeout=30,
            message="the admission policy to refuse patching another pod",
        )
        assert "only its own pod runner-mine" in other

        patched = core.patch_namespaced_pod(
            "runner-mine", namespace, annotate("audiojob.dev/progress", "40")
        )
        assert patched.metadata.annotations["audiojob.dev/progress"] == "40"

        labels = refused(
            lambda: core.patch_namespaced_pod(
                "runner-mine", namespace, {"metadata": {"labels": {"evil": "true"}}}
            )
        )
        assert "may not change" in labels
        spec = refused(
            lambda: core.patch_namespaced_pod(
                "runner-mine",
                namespace,
                {"spec": {"activeDeadlineSeconds": 999999}},
            )
        )
        assert "may not change" in spec
