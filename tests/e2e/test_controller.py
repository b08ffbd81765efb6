"""The controller end to end: real control plane (kwok pods), real SQLite, real process."""

from __future__ import annotations

import json
import signal
import time

import kubernetes
import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.cluster
SIM = "audiojob.dev/sim-"


def pod_annotations(**kv: str) -> str:
    return json.dumps({SIM + k.replace("_", "-"): v for k, v in kv.items()})


def test_rows_become_jobs_and_complete_with_the_result(controller, rows, batch_v1, namespace):
    message = json.dumps({"ok": True, "result": {"path": "/data/a.mp3", "duration": 3.5}})
    controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(message=message))
    for i in range(3):
        rows.insert(
            f"job-{i}",
            type=("ingest", "preview", "save")[i],
            payload={"url": "https://x.test/a"} if i == 0 else {"input": "a.mp3"},
        )
    for i in range(3):
        row = rows.wait_status(f"job-{i}", "complete")
        assert json.loads(row.result) == {"path": "/data/a.mp3", "duration": 3.5}
        assert row.k8s_job and row.k8s_job.startswith(f"aj-job-{i}-") and row.attempt == 1
    job = batch_v1.read_namespaced_job(rows.get("job-0").k8s_job, namespace)
    assert job.spec.backoff_limit == 0 and job.spec.active_deadline_seconds == 600
    wait_for(
        lambda: (
            batch_v1.read_namespaced_job(
                job.metadata.name, namespace
            ).spec.ttl_seconds_after_finished
            is not None
        ),
        timeout=30,
        message="TTL after outcome",
    )
    lines = [entry for entry in controller.logs() if entry.get("job_id") == "job-0"]
    assert lines and all(entry["trace_id"] for entry in lines)
    assert controller.stop() == 0


def test_permanent_failure_fails_at_once(controller, rows):
    message = json.dumps(
        {"ok": False, "error": "yt-dlp could not download https://x: HTTP 403", "kind": "permanent"}
    )
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(
            outcome="fail", exit_code="65", message=message
        )
    )
    rows.insert("p1")
    row = rows.wait_status("p1", "failed")
    assert (row.error_kind, row.error, row.attempt) == (
        "permanent",
        "yt-dlp could not download https://x: HTTP 403",
        1,
    )


def test_transient_failure_is_retried_once_then_fails(controller, rows):
    message = json.dumps({"ok": False, "error": "connection reset by source", "kind": "transient"})
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(
            outcome="fail", exit_code="75", message=message
        )
    )
    rows.insert("t1")
    row = rows.wait_status("t1", "failed")
    assert row.attempt == 2 and row.retry_count == 1
    assert row.error_kind == "transient" and "connection reset by source" in row.error


def test_oom_names_the_memory_limit(controller, rows):
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(
            outcome="fail", exit_code="137", reason="OOMKilled"
        )
    )
    rows.insert("oom")
    row = rows.wait_status("oom", "failed")
    assert "1Gi memory limit" in row.error and "OOMKilled" in row.error


def test_image_pull_error_fails_without_waiting_for_the_timeout(controller, rows):
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(
            outcome="waiting", reason="ImagePullBackOff", message="Back-off pulling image x"
        )
    )
    rows.insert("img")
    row = rows.wait_status("img", "failed")
    assert "ImagePullBackOff" in row.error and row.error_kind == "permanent"


def test_deadline_exceeded_is_a_timeout(controller, rows):
    controller.start(
        AUDIOJOB_TIMEOUTS__PREVIEW_SECONDS="2",
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(outcome="hang"),
    )
    rows.insert("slow", type="preview", payload={"input": "a.mp3"})
    row = rows.wait_status("slow", "failed", timeout=90)
    assert row.error_kind == "timeout"
    assert row.error == "timed out after 2 s (preview limit)"


def test_bad_rows_fail_with_a_sentence_and_others_flow(controller, rows):
    controller.start()
    rows.insert("bad-json", payload='{"url": x}')
    rows.insert("bad-type", type="transcode", payload={})
    rows.insert("good")
    assert rows.wait_status("good", "complete")
    bad = rows.wait_status("bad-json", "failed")
    assert bad.error.startswith("payload is not valid JSON at line 1 column 9")
    assert "unknown job type 'transcode'" in rows.wait_status("bad-type", "failed").error


@pytest.mark.parametrize("when", ["running", "pending-pod"])
def test_cancelling_a_processing_row_deletes_its_pod(controller, rows, core_v1, namespace, when):
    ann = {"outcome": "hang"} if when == "running" else {"outcome": "hang", "start_delay": "1h"}
    controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(**ann))
    rows.insert("c1")
    phase = "Running" if when == "running" else "Pending"
    wait_for(
        lambda: any(p.status.phase == phase for p in core_v1.list_namespaced_pod(namespace).items),
        timeout=60,
        message=f"a {phase} pod",
    )
    assert rows.cancel("c1")
    row = rows.wait_status("c1", "cancelled")
    assert row.finished_at and row.stage is None and row.progress == 0
    assert core_v1.list_namespaced_pod(namespace).items == []
    # Finalizing the cancellation counted it (audiojob_outcomes_total) without breaking the cycle.
    assert controller.stop() == 0
    errors = [line for line in controller.logs() if line.get("level") == "error"]
    assert not errors, errors[:2]


def test_a_pending_row_cancelled_before_claim_never_gets_a_job(
    controller, rows, batch_v1, namespace
):
    rows.insert("early")
    assert rows.cancel("early")
    controller.start()
    rows.insert("after")
    rows.wait_status("after", "complete")
    assert rows.get("early").status == "cancelled"
    names = [j.metadata.name for j in batch_v1.list_namespaced_job(namespace).items]
    assert not [n for n in names if n.startswith("aj-early-")]


def test_jobs_survive_a_controller_restart_and_are_adopted(controller, rows, core_v1, namespace):
    controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(duration="6s"))
    rows.insert("adopt")
    wait_for(
        lambda: any(
            p.status.phase == "Running" for p in core_v1.list_namespaced_pod(namespace).items
        ),
        timeout=60,
        message="a Running pod",
    )
    assert controller.stop(signal.SIGTERM) == 0
    assert rows.get("adopt").status == "processing"
    controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(duration="6s"))
    row = rows.wait_status("adopt", "complete")
    assert row.attempt == 1


def test_a_job_whose_row_is_gone_or_terminal_is_deleted(controller, rows, batch_v1, namespace):
    from controller.builders import build_job
    from controller.settings import load_settings

    settings = load_settings(kube={"namespace": namespace})
    body = build_job(
        job_id="orphan",
        job_type="ingest",
        attempt=1,
        trace_id="t",
        payload_json="{}",
        settings=settings,
    )
    body["spec"]["template"]["metadata"]["annotations"][SIM + "outcome"] = "hang"
    body["spec"]["template"]["spec"]["serviceAccountName"] = "default"
    batch_v1.create_namespaced_job(namespace, body)
    controller.start()

    def gone() -> bool:
        try:
            batch_v1.read_namespaced_job(body["metadata"]["name"], namespace)
        except kubernetes.client.ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=60, message="the orphan Job deleted")


@pytest.mark.parametrize("after", [0.5, 1.5, 3.0])
def test_sigterm_while_starting_up_is_a_clean_exit(controller, rows, after):
    # KEDA may scale the controller back to zero moments after it scaled it up. A stop that
    # lands while Python imports kopf, while kopf starts, or while our start-up handler has
    # the database open but no engine yet, must still end the process promptly with 0, and
    # the next controller must find everything as it was.
    rows.insert("early")
    controller.start()
    time.sleep(after)
    assert controller.stop() == 0
    controller.start()
    assert rows.wait_status("early", "complete").attempt == 1
    controller.wait_ready()
    assert controller.stop() == 0


def test_sigterm_while_start_up_keeps_failing_is_a_clean_exit(controller, rows, tmp_path):
    # Start-up opens the database, then fails on the Kubernetes config; kopf retries it. The
    # database client opened by each failed try must not outlive it and keep the process up.
    rows.insert("kept")
    controller.start(KUBECONFIG=str(tmp_path / "missing.kubeconfig"))
    wait_for(
        lambda: any("startup' failed" in e.get("message", "") for e in controller.logs()),
        timeout=60,
        message="a failed start-up",
    )
    assert controller.stop() == 0
    assert rows.get("kept").status == "pending"
