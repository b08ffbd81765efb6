"""Progress reaches the pod's annotations on a real API server, with a token bound to the pod.

The runner runs on the host (kwok only simulates the pod's containers), authenticated exactly
as in a pod: a ServiceAccount token bound to the pod object, used through KUBECONFIG.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import kubernetes
import pytest

from runner.contract import ANN_HEARTBEAT, ANN_PROGRESS, ANN_STAGE, EXIT_TERMINATED
from tests.helpers import service_account_with_rules, wait_for
from tests.runner.conftest import Runner, ffmpeg

pytestmark = pytest.mark.cluster

POD = "runner-under-test"
SA = "audiojob-runner"


def bound_token(core: kubernetes.client.CoreV1Api, namespace: str, pod_uid: str) -> str:
    request = {
        "spec": {
            "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": POD, "uid": pod_uid},
        }
    }
    response = core.create_namespaced_service_account_token(SA, namespace, request)
    return str(response.status.token)


def setup_pod_identity(api: kubernetes.client.ApiClient, namespace: str) -> str:
    """A ServiceAccount allowed to patch pods, a pod running as it, and a token bound to it."""
    core = kubernetes.client.CoreV1Api(api)
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
    service_account_with_rules(api, namespace, SA, rules)
    pod = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": POD, "annotations": {"audiojob.dev/sim-outcome": "hang"}},
            "spec": {
                "serviceAccountName": SA,
                "restartPolicy": "Never",
                "containers": [{"name": "runner", "image": "audiojob-operator:test"}],
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod(POD, namespace).status.phase == "Running",
        timeout=60,
        message="the pod to run on a kwok node",
    )
    return bound_token(core, namespace, pod.metadata.uid)


def test_progress_reaches_pod_annotations(
    cluster: object, api: kubernetes.client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    token = setup_pod_identity(api, namespace)
    kubeconfig = tmp_path / "runner.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": cluster.server,  # type: ignore[attr-defined]
                            "certificate-authority": str(cluster.ca_file),  # type: ignore[attr-defined]
                        },
                    }
                ],
                "users": [{"name": "runner", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "runner"}}],
                "current-context": "c",
            }
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    # Long enough that the render is still going when we look (it is stopped afterwards).
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=8000:duration=3600",
           "-c:a", "flac", str(out / "long.flac"))  # fmt: skip
    runner = Runner(tmp=tmp_path, output=str(out))
    proc = runner.start(
        "save",
        {"input": "long.flac", "edits": [{"op": "speed", "factor": 0.5}]},
        POD_NAME=POD,
        POD_NAMESPACE=namespace,
        KUBECONFIG=str(kubeconfig),
    )
    core = kubernetes.client.CoreV1Api(api)
    try:
        started = int(time.time() * 1000)

        def annotations() -> dict[str, str]:
            return dict(core.read_namespaced_pod(POD, namespace).metadata.annotations or {})

        seen = wait_for(
            lambda: (
                (a := annotations()).get(ANN_STAGE) == "rendering"
                and int(a.get(ANN_PROGRESS, "0")) > 5
                and a
            ),
            timeout=90,
            message="rendering progress on the pod's annotations",
        )
        assert int(seen[ANN_HEARTBEAT]) >= started - 5_000
        later = wait_for(
            lambda: int((a := annotations())[ANN_PROGRESS]) > int(seen[ANN_PROGRESS]) and a,
            timeout=60,
            message="progress to advance",
        )
        assert int(later[ANN_HEARTBEAT]) > int(seen[ANN_HEARTBEAT])
        proc.send_signal(signal.SIGTERM)
        run = runner.finish(proc)
        assert run.code == EXIT_TERMINATED, run.stderr
        assert "progress stage=" not in run.stderr  # it went to the API, not to stderr
        assert "could not report progress" not in run.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
