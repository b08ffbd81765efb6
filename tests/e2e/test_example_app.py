"""docs/job-table.md's "What the app may write", run: examples/app (Node, @libsql/client)
against the real controller, through the Hrana test server and on a shared `file:` database.
The test plays the runner (kwok pods run no code): it writes stage and progress on the running
pod as the runner would."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.hrana_server import HranaServer
from tests.helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
RESULT = {"path": "/data/talk.mp3", "duration": 42.5}


@pytest.fixture(scope="module")
def node_modules() -> None:
    subprocess.run(["bash", str(ROOT / "devcluster" / "npm-deps.sh")], check=True)


@pytest.fixture(params=["http", "file"])
def db_url(request: pytest.FixtureRequest, controller: Any) -> Iterator[str]:
    if request.param == "file":
        yield f"file:{controller.db_path}"
        return
    server = HranaServer(str(controller.db_path)).start()
    try:
        yield server.url("http")
    finally:
        controller.stop()  # before the server goes, so the controller's last writes land
        server.stop()


def pod_of(core_v1: Any, namespace: str, suffix: str) -> Any:
    for pod in core_v1.list_namespaced_pod(namespace).items:
        job_id = (pod.metadata.annotations or {}).get("audiojob.dev/job-id", "")
        if job_id.endswith(suffix) and pod.status.phase == "Running":
            return pod
    return None


def test_the_example_app_inserts_watches_cancels_and_reads_the_result(
    node_modules: None, db_url: str, controller: Any, core_v1: Any, namespace: str
) -> None:
    message = json.dumps({"ok": True, "result": RESULT})
    controller.start(
        TURSO_DATABASE_URL=db_url,
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps(
            {"audiojob.dev/sim-duration": "8s", "audiojob.dev/sim-message": message}
        ),
    )
    app = subprocess.Popen(
        ["node", str(ROOT / "examples" / "app" / "app.mjs")],
        env=os.environ | {"TURSO_DATABASE_URL": db_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pod = wait_for(
            lambda: pod_of(core_v1, namespace, "-keep"), timeout=60, message="the job's pod runs"
        )
        progress = {"audiojob.dev/stage": "downloading", "audiojob.dev/progress": "40"}
        beat = {"audiojob.dev/heartbeat": str(int(time.time() * 1000))}
        core_v1.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": progress | beat}}
        )
        out, err = app.communicate(timeout=180)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    keep, cancel = events[0]["job_ids"]
    rows = [e for e in events if e["event"] == "row"]
    assert {"job_id": keep, "status": "processing", "stage": "downloading", "progress": 40} in [
        {k: e[k] for k in ("job_id", "status", "stage", "progress")} for e in rows
    ]
    assert [e["status"] for e in rows if e["job_id"] == cancel][-1] == "cancelled"
    assert {"event": "cancel", "job_id": cancel, "rows_affected": 1} in events
    assert events[-1] == {
        "event": "result",
        "job_id": keep,
        "status": "complete",
        "result": RESULT,
        "error": None,
    }
