"""The chart's NetworkPolicies and runner settings: default-deny egress that matches the runner's
address guard, the open switch, allowlists, and the Kubernetes-shaped runner resources reaching
the controller's settings intact. Rendered offline, then dry-run on the real API server."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

import yaml

from controller.builders import build_job
from controller.settings import load_settings
from devcluster.controlplane import LocalCluster, binary
from runner.rules import REFUSED_NETWORKS
from tests.chart.test_chart import CHART, DATABASE, render

EGRESS_OPTIONS = [
    "runner.allowedNetworks={10.20.0.0/16,10.30.0.5,minio.storage.svc:9000}",
    "runner.clusterNetworks={203.1.0.0/16,2001:db9::/32}",
    "runner.egress.extraAllowed[0].to[0].ipBlock.cidr=10.40.0.0/24",
    "runner.egress.extraAllowed[0].ports[0].port=9000",
    "networkPolicy.apiServer.cidrs={172.18.0.2/32}",
    "networkPolicy.database.cidrs={10.50.0.0/24}",
    "networkPolicy.database.ports={8080}",
]


def docs(*sets: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(*sets)) if d]


def policy(rendered: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return next(
        d
        for d in rendered
        if d["kind"] == "NetworkPolicy"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )


def controller_env(rendered: list[dict[str, Any]]) -> dict[str, str]:
    deploy = next(
        d
        for d in rendered
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("controller")
    )
    return {
        e["name"]: e.get("value")
        for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def public_blocks(egress: list[dict[str, Any]]) -> dict[str, list[str]]:
    rule = next(
        r
        for r in egress
        if any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in r.get("to", []))
    )
    return {p["ipBlock"]["cidr"]: p["ipBlock"]["except"] for p in rule["to"]}


def test_default_runner_egress_is_dns_api_and_the_public_internet_only() -> None:
    runner = policy(docs(), "runner")
    assert runner["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert runner["spec"]["ingress"] == []
    egress = runner["spec"]["egress"]
    assert {} not in egress, "egress must not be open by default"
    dns = egress[0]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert egress[1] == {
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    }
    # The except lists are exactly the ranges the runner's guard refuses: one list, two places.
    blocks = public_blocks(egress)
    refused = [str(net) for net, _ in REFUSED_NETWORKS]
    assert blocks["0.0.0.0/0"] + blocks["::/0"] == refused
    assert "169.254.0.0/16" in blocks["0.0.0.0/0"] and "fe80::/10" in blocks["::/0"]
    assert len(egress) == 3


def test_open_egress_restores_the_old_behaviour() -> None:
    runner = policy(docs("runner.egress.open=true"), "runner")
    assert runner["spec"]["egress"] == [{}]
    assert runner["spec"]["ingress"] == []


def test_allowlists_reach_the_controller_and_the_policy() -> None:
    rendered = docs(*EGRESS_OPTIONS)
    env = controller_env(rendered)
    assert (
        env["AUDIOJOB_RUNNER__ALLOWED_NETWORKS"] == "10.20.0.0/16,10.30.0.5,minio.storage.svc:9000"
    )
    assert env["AUDIOJOB_RUNNER__CLUSTER_NETWORKS"] == "203.1.0.0/16,2001:db9::/32"
    settings = load_settings(
        runner={
            "allowed_networks": env["AUDIOJOB_RUNNER__ALLOWED_NETWORKS"],
            "cluster_networks": env["AUDIOJOB_RUNNER__CLUSTER_NETWORKS"],
        }
    )
    assert settings.runner.network_rules.refusal(ipaddress.ip_address("10.20.1.1"), 80) is None

    egress = policy(rendered, "runner")["spec"]["egress"]
    blocks = public_blocks(egress)
    assert blocks["0.0.0.0/0"][-1] == "203.1.0.0/16" and blocks["::/0"][-1] == "2001:db9::/32"
    assert {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}, {"ipBlock": {"cidr": "10.30.0.5/32"}}]
    } in egress
    assert egress[-1] == {
        "to": [{"ipBlock": {"cidr": "10.40.0.0/24"}}],
        "ports": [{"port": 9000}],
    }
    assert egress[1]["to"] == [{"ipBlock": {"cidr": "172.18.0.2/32"}}]


def test_controller_and_queue_metrics_reach_dns_the_api_and_the_database_only() -> None:
    rendered = docs()
    controller = policy(rendered, "controller")["spec"]
    assert controller["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    dns, api, database = controller["egress"]
    assert dns["ports"][0]["port"] == 53 and "to" not in api
    assert database["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert public_blocks([database])["0.0.0.0/0"][:2] == ["0.0.0.0/8", "10.0.0.0/8"]
    metrics = policy(rendered, "queue-metrics")["spec"]
    assert metrics["ingress"] == [{"ports": [{"port": 8081, "protocol": "TCP"}]}]
    assert [r["ports"][0]["port"] for r in metrics["egress"]] == [53, 443], "no API for it"

    in_cluster = policy(docs(*EGRESS_OPTIONS), "queue-metrics")["spec"]["egress"][1]
    assert in_cluster == {
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.50.0.0/24"}}],
    }


def test_no_policies_when_disabled() -> None:
    assert not [d for d in docs("networkPolicy.enabled=false") if d["kind"] == "NetworkPolicy"]


def test_runner_resources_are_keyed_like_kubernetes_and_reach_job_pods() -> None:
    rendered = docs(
        "runner.resources.save.requests.cpu=1",
        "runner.resources.save.limits.memory=4Gi",
        "runner.resources.save.limits.cpu=null",
    )
    raw = controller_env(rendered)["AUDIOJOB_RUNNER__RESOURCES"]
    settings = load_settings(runner={"resources": json.loads(raw)})

    def pod_resources(job_type: str) -> dict[str, Any]:
        job = build_job(
            job_id="j", job_type=job_type, attempt=1, trace_id="t", payload_json="{}",
            settings=settings,
        )  # fmt: skip
        return dict(job["spec"]["template"]["spec"]["containers"][0]["resources"])

    assert pod_resources("ingest") == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    assert pod_resources("save") == {
        "requests": {"cpu": "1", "memory": "256Mi"},
        "limits": {"memory": "4Gi"},  # a limit left out is no limit
    }


def test_egress_options_pass_a_server_side_dry_run(cluster: LocalCluster, namespace: str) -> None:
    for sets in (EGRESS_OPTIONS, ["runner.egress.open=true"]):
        rendered = render(*sets, namespace=namespace, release="egress")
        proc = cluster.kubectl(
            "apply", "--dry-run=server", f"--namespace={namespace}", "-f", "-",
            input=rendered, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "networkpolicy.networking.k8s.io/egress-audiojob-operator-runner created" in (
            proc.stdout
        )


def test_schema_refuses_the_old_resources_shape_and_bad_networks() -> None:
    for bad in (
        "runner.resources.ingest.cpu_request=1",
        "runner.resources.transcode.requests.cpu=1",
        "runner.clusterNetworks={not-a-cidr}",
        "networkPolicy.apiServer.ports=null",
    ):
        proc = subprocess.run(
            [str(binary("helm")), "template", "x", str(CHART), f"--set={DATABASE}", f"--set={bad}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
