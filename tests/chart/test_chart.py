"""The Helm chart: lint, golden renders, the manifests/ copy, and behaviour on a real API server.

Golden files: `UPDATE_GOLDEN=1 .venv/bin/pytest tests/chart` rewrites tests/chart/golden/*.yaml
and manifests/audiojob-operator.yaml from the chart.

KEDA is not installed on the local control plane, so server-side checks render with
keda.enabled=false and serviceMonitor.enabled=false (their CRDs are absent).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from devcluster.controlplane import LocalCluster, binary
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "audiojob-operator"
GOLDEN = Path(__file__).parent / "golden"
MANIFEST = ROOT / "manifests" / "audiojob-operator.yaml"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

RELEASE = "audiojob-operator"
MANIFEST_NAMESPACE = "audiojob"
# The one value the chart requires. Renders default to it; the manifests/ copy names a Secret
# the user creates instead, so it holds no URL.
DATABASE = "database.url=libsql://example-org.turso.io"
MANIFEST_SECRET = "audiojob-db"
MANIFEST_DATABASE = f"database.existingSecret={MANIFEST_SECRET}"
MANIFEST_COMMAND = (
    f"helm template {RELEASE} charts/audiojob-operator --namespace {MANIFEST_NAMESPACE}"
    f" --set {MANIFEST_DATABASE} --no-hooks"
)
MANIFEST_HEADER = (
    "# Rendered from charts/audiojob-operator with default values and the database in the\n"
    f"# Secret {MANIFEST_SECRET}; do not edit by hand.\n"
    f"# Regenerate: {MANIFEST_COMMAND}\n"
    "#   (or UPDATE_GOLDEN=1 .venv/bin/pytest tests/chart, which also checks it stays in sync)\n"
    f"# Apply: kubectl create namespace {MANIFEST_NAMESPACE}\n"
    f"#        kubectl create secret generic {MANIFEST_SECRET} -n {MANIFEST_NAMESPACE} \\\n"
    "#          --from-literal=database-url=libsql://<db>.turso.io"
    " --from-literal=auth-token=<token>\n"
    "#        kubectl apply -f manifests/audiojob-operator.yaml\n"
)

FULL_VALUES = [
    "jobsNamespace.name=audiojob-jobs",
    "jobsNamespace.create=true",
    "database.url=libsql://example-org.turso.io",
    "database.authToken=not-a-real-token",
    "keda.enabled=true",
    "serviceMonitor.enabled=true",
    "serviceMonitor.labels.release=prometheus",
    "outputVolume.create=true",
    "outputVolume.storageClassName=standard",
    "image.tag=0.1.1",
    "controller.logLevel=DEBUG",
    "runner.allowedNetworks={10.20.0.0/16,minio.storage.svc:9000}",
    "retention.finishedDays=30",
]

RUNNER_SA = "audiojob-runner"


def helm(*args: str, input: str | None = None) -> str:
    proc = subprocess.run(
        [str(binary("helm")), *args], capture_output=True, text=True, input=input, check=False
    )
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def render(
    *sets: str,
    namespace: str = MANIFEST_NAMESPACE,
    release: str = RELEASE,
    database: str = DATABASE,
    hooks: bool = True,
) -> str:
    flags = [f"--set={s}" for s in (database, *sets)] + ([] if hooks else ["--no-hooks"])
    return helm("template", release, str(CHART), f"--namespace={namespace}", *flags)


def check_golden(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1"
    assert path.read_text() == text, f"{path} is out of date; run with UPDATE_GOLDEN=1"


# -- offline ------------------------------------------------------------------------------


def test_helm_lint_is_clean() -> None:
    out = helm("lint", "--strict", str(CHART), f"--set={DATABASE}")
    assert "0 chart(s) failed" in out
    full = helm("lint", "--strict", str(CHART), *[f"--set={s}" for s in FULL_VALUES])
    assert "0 chart(s) failed" in full


def test_golden_default() -> None:
    check_golden(GOLDEN / "default.yaml", render())


def test_golden_full() -> None:
    check_golden(GOLDEN / "full.yaml", render(*FULL_VALUES))


def test_manifests_match_the_chart() -> None:
    # No hooks: `kubectl apply` would run the uninstall hook's Job at once.
    check_golden(MANIFEST, MANIFEST_HEADER + render(database=MANIFEST_DATABASE, hooks=False))


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for n, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        leaf = not stripped.endswith(":")  # a key with a value, not a parent block
        if leaf and not any(lines[k].strip().startswith("# --") for k in range(max(0, n - 3), n)):
            # Members of a documented map (timeouts, resources) count through their parent.
            parent_doc = any(
                "# --" in lines[k]
                and len(lines[k]) - len(lines[k].lstrip()) < len(line) - len(line.lstrip())
                for k in range(max(0, n - 25), n)
            )
            if not parent_doc:
                undocumented.append(stripped)
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_schema_rejects_bad_values() -> None:
    proc = subprocess.run(
        [str(binary("helm")), "template", "x", str(CHART), "--set=controller.replicas=2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "maximum" in proc.stderr


def test_keda_scaled_object_shape() -> None:
    import yaml

    docs = [d for d in yaml.safe_load_all(render(*FULL_VALUES)) if d]
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["maxReplicaCount"] == 1
    assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 1}
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "metrics-api"
    assert trigger["metadata"]["valueLocation"] == "total"
    assert trigger["metadata"]["url"].endswith("-queue-metrics.audiojob.svc:8081/queue")
    deploy = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("controller")
    )
    assert "replicas" not in deploy["spec"], "KEDA owns the replica count"
    ns = next(d for d in docs if d["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# -- on the real API server -----------------------------------------------------------------


def test_server_side_dry_run(cluster: LocalCluster, namespace: str) -> None:
    rendered = render(namespace=namespace, release="dry")
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
    assert "validatingadmissionpolicy" in proc.stdout


def test_server_side_dry_run_with_options_under_restricted_pod_security(
    cluster: LocalCluster, namespace: str
) -> None:
    """Every optional piece the local control plane has CRDs for, in a restricted namespace:
    the API server warns about Deployments whose pods would violate the policy."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    jobs_ns = f"{namespace}-jobs"
    rendered = render(
        f"jobsNamespace.name={jobs_ns}",
        "jobsNamespace.create=true",
        "outputVolume.create=true",
        "database.authToken=not-a-real-token",
        namespace=namespace,
        release="dry",
    )
    proc = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input=rendered,
        check=False,
    )
    # The jobs namespace does not exist in a dry run, so its namespaced objects are refused
    # with NotFound; everything else must be accepted, with no PodSecurity warning.
    assert "PodSecurity" not in proc.stderr, proc.stderr
    errors = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and f'namespaces "{jobs_ns}" not found' not in line
    ]
    assert not errors, proc.stderr
    assert "deployment.apps/dry-audiojob-operator-controller created (server dry run)" in (
        proc.stdout
    )

    # The check is not vacuous: a weakened security context draws the warning.
    weak = render("securityContext.allowPrivilegeEscalation=true", namespace=namespace)
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=weak, check=False)
    assert "would violate PodSecurity" in proc.stderr, proc.stderr


@pytest.fixture
def installed(cluster: LocalCluster, namespace: str) -> Iterator[str]:
    """The chart installed by `helm install` into `namespace` (also the jobs namespace)."""
    release = "aj"
    helm(
        "install",
        release,
        str(CHART),
        f"--namespace={namespace}",
        f"--kubeconfig={cluster.kubeconfig}",
        "--set=database.url=libsql://example.invalid",
    )
    yield release
    # Uninstall so the cluster-scoped admission policy goes with the namespace.
    # No hooks: the uninstall hook's pod would wait on a simulated node (the real node
    # runs it: tests/realnode/test_release.py).
    helm(
        "uninstall",
        release,
        f"--namespace={namespace}",
        f"--kubeconfig={cluster.kubeconfig}",
        "--no-hooks",
    )


def token_for(core: kubernetes.client.CoreV1Api, sa: str, ns: str, pod: Any = None) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 600}
    if pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
        }
    tr = core.create_namespaced_service_account_token(sa, ns, {"spec": spec})
    return str(tr.status.token)


def client_with_token(cluster: LocalCluster, token: str) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    cfg.host = cluster.server
    cfg.ssl_ca_cert = str(cluster.ca_file)
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return kubernetes.client.ApiClient(cfg)


def status_of(call: Any) -> int:
    try:
        call()
    except kubernetes.client.ApiException as e:
        return int(e.status)
    return 200


def test_controller_rbac(
    cluster: LocalCluster, namespace: str, installed: str, core_v1: kubernetes.client.CoreV1Api
) -> None:
    sa = f"{installed}-audiojob-operator-controller"
    with client_with_token(cluster, token_for(core_v1, sa, namespace)) as api:
        batch = kubernetes.client.BatchV1Api(api)
        core = kubernetes.client.CoreV1Api(api)
        apps = kubernetes.client.AppsV1Api(api)
        job = {
            "metadata": {"name": f"rbac-{uuid.uuid4().hex[:6]}"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox"}],
                    }
                }
            },
        }
        created = wait_for(
            lambda: batch.create_namespaced_job(namespace, job, dry_run="All"),
            timeout=10,
            message="the controller to be allowed to create Jobs",
        )
        assert created.metadata.name == job["metadata"]["name"]
        assert batch.list_namespaced_job(namespace) is not None
        assert core.list_namespaced_pod(namespace) is not None
        # Leader election: a Lease in the jobs namespace, read, created and renewed.
        leases = kubernetes.client.CoordinationV1Api(api)
        lease = {"metadata": {"name": "audiojob-rbac"}, "spec": {"holderIdentity": "x"}}
        assert leases.create_namespaced_lease(namespace, lease, dry_run="All") is not None
        assert status_of(lambda: leases.read_namespaced_lease("audiojob-rbac", namespace)) == 404
        assert status_of(lambda: leases.delete_namespaced_lease("audiojob-rbac", namespace)) == 403
        assert status_of(lambda: core.list_namespaced_secret(namespace)) == 403
        assert (
            status_of(
                lambda: apps.delete_namespaced_deployment(
                    f"{installed}-audiojob-operator-controller", namespace
                )
            )
            == 403
        )
        assert status_of(core.list_namespace) == 403
        assert status_of(lambda: batch.list_namespaced_job("default")) == 403


def runner_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "audiojob-operator"},
        },
        "spec": {
            "serviceAccountName": RUNNER_SA,
            # Stays Pending: no node matches, so kwok never touches it.
            "nodeSelector": {"audiojob.dev/no-such-node": "true"},
            "containers": [{"name": "runner", "image": "audiojob-operator:0.1.0"}],
        },
    }


def test_admission_policy_confines_runner_tokens(
    cluster: LocalCluster, namespace: str, installed: str, core_v1: kubernetes.client.CoreV1Api
) -> None:
    pod_a = core_v1.create_namespaced_pod(namespace, runner_pod("runner-a"))
    pod_b = core_v1.create_namespaced_pod(namespace, runner_pod("runner-b"))
    token = token_for(core_v1, RUNNER_SA, namespace, pod=pod_a)

    def annotate(_pod: str, key: str, value: str) -> dict[str, Any]:
        return {"metadata": {"annotations": {key: value}}}

    with client_with_token(cluster, token) as api:
        core = kubernetes.client.CoreV1Api(api)

        def denied(call: Any) -> kubernetes.client.ApiException:
            try:
                call()
            except kubernetes.client.ApiException as e:
                if e.status in (403, 422):
                    return e
                raise
            raise AssertionError("the request was admitted")

        # The policy becomes active about a second after it is created.
        wait_for(
            lambda: denied(
                lambda: core.patch_namespaced_pod(
                    "runner-b", namespace, annotate("runner-b", "audiojob.dev/progress", "1")
                )
            ),
            timeout=30,
            message="the admission policy to deny patching another pod",
        )

        patched = core.patch_namespaced_pod(
            "runner-a", namespace, annotate("runner-a", "audiojob.dev/progress", "0.5")
        )
        assert patched.metadata.annotations["audiojob.dev/progress"] == "0.5"
        core.patch_namespaced_pod(
            "runner-a",
            namespace,
            {
                "metadata": {
                    "annotations": {
                        "audiojob.dev/stage": "download",
                        "audiojob.dev/heartbeat": "2026-01-01T00:00:00Z",
                    }
                }
            },
        )

        other = denied(
            lambda: core.patch_namespaced_pod(
                "runner-b", namespace, annotate("runner-b", "audiojob.dev/progress", "0.9")
            )
        )
        assert "only its own pod runner-a" in str(other.body)

        labels = denied(
            lambda: core.patch_namespaced_pod(
                "runner-a", namespace, {"metadata": {"labels": {"evil": "true"}}}
            )
        )
        assert "may not change" in str(labels.body)

        foreign_key = denied(
            lambda: core.patch_namespaced_pod(
                "runner-a", namespace, annotate("runner-a", "audiojob.dev/result", "forged")
            )
        )
        assert "only the audiojob.dev/stage" in str(foreign_key.body)

    # An unbound token of the same service account is refused outright.
    unbound = token_for(core_v1, RUNNER_SA, namespace)
    with client_with_token(cluster, unbound) as api:
        core = kubernetes.client.CoreV1Api(api)
        assert status_of(
            lambda: core.patch_namespaced_pod(
                "runner-a", namespace, annotate("runner-a", "audiojob.dev/progress", "1")
            )
        ) in (403, 422)
    assert pod_b.metadata.name == "runner-b"
