"""/healthz tells the truth about the controller's watches and engine, and credentials renewed
by a slow exec plugin stall neither: the real controller process, its Kubernetes traffic
through a proxy that breaks watch connections on demand (tests.faultproxy)."""

from __future__ import annotations

import json
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.faultproxy import Fault, FaultProxy
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster


def healthz(controller) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{controller.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metric(controller, name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{controller.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def watching(kind: str):
    return lambda method, path: method == "GET" and f"/{kind}?" in path and "watch=true" in path


def test_a_watch_cut_mid_stream_resumes_and_health_stays_green(controller, rows, cluster, tmp_path):
    with FaultProxy(cluster) as proxy:
        proxy.add(Fault(match=watching("pods"), after_lines=0, cut=True))
        controller.start(KUBECONFIG=str(proxy.kubeconfig(tmp_path / "kc")))
        controller.wait_ready()
        rows.insert("job-cut")
        rows.wait_status("job-cut", "complete")
        assert (metric(controller, "audiojob_watch_restarts_total", kind="pod") or 0) >= 1
        wait_for(
            lambda: metric(controller, "audiojob_watch_up", kind="pod") == 1,
            timeout=30,
            message="the pod watch streaming again",
        )
        status, body = healthz(controller)
        assert status == 200 and body["problems"] == [], body
        assert metric(controller, "audiojob_last_cycle_timestamp_seconds")
        assert controller.stop() == 0


def test_a_watch_that_dies_on_a_line_it_does_not_expect_fails_healthz(
    controller, rows, cluster, tmp_path
):
    with FaultProxy(cluster) as proxy:
        # Valid JSON, but not a watch event: no handled error covers it.
        proxy.add(Fault(match=watching("jobs"), after_lines=0, inject=b"[]\n"))
        controller.start(KUBECONFIG=str(proxy.kubeconfig(tmp_path / "kc")))
        controller.wait_ready()
        rows.insert("job-garbage")

        def unhealthy() -> dict[str, Any] | None:
            status, body = healthz(controller)
            return body if status == 503 else None

        body = wait_for(unhealthy, timeout=60, message="/healthz to fail")
        assert any("the watch task stopped: AttributeError" in p for p in body["problems"]), body
        assert metric(controller, "audiojob_watch_up", kind="job") == 0
        assert any(
            "the job watch stopped" in str(line.get("message")) for line in controller.logs()
        )


PLUGIN = textwrap.dedent(
    """
    import json, pathlib, sys, time
    state = pathlib.Path(sys.argv[1])
    calls = len(list(state.glob("call-*"))) + 1
    (state / f"call-{calls}").touch()
    if calls > 1:
        # Slow: until the test lets it answer (with a deadline of its own).
        deadline = time.monotonic() + 120
        while not (state / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    print(json.dumps({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": sys.argv[2]},
    }))
    (state / f"done-{calls}").touch()
    """
)


def test_a_slow_exec_plugin_stalls_neither_healthz_nor_the_engine(
    controller, rows, cluster, tmp_path
):
    state = tmp_path / "plugin"
    state.mkdir()
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    kubeconfig = tmp_path / "kubeconfig"
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for user in config["users"]:
        user["user"] = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(plugin), str(state), cluster.admin_token],
                "interactiveMode": "Never",
            }
        }
    kubeconfig.write_text(yaml.safe_dump(config))
    controller.start(KUBECONFIG=str(kubeconfig), AUDIOJOB_KUBE__CREDENTIAL_REFRESH_SECONDS="0.5")
    controller.wait_ready()
    # The background renewal has started the plugin, which now hangs until released.
    wait_for((state / "call-2").exists, timeout=60, message="a renewal")
    assert not (state / "done-2").exists()
    status, body = healthz(controller)
    assert status == 200 and body["problems"] == [], body
    before = body["last_cycle_ms"]
    # The engine goes on with the token it has: a row becomes a Job and completes.
    rows.insert("job-during-renewal")
    rows.wait_status("job-during-renewal", "complete")
    status, body = healthz(controller)
    assert status == 200 and body["last_cycle_ms"] > before
    assert not (state / "done-2").exists(), "all of that happened while the plugin hung"
    (state / "release").touch()
    wait_for((state / "done-2").exists, timeout=30, message="the renewal to finish")
    assert controller.stop() == 0
