"""The runner's payload rules at claim, through the real controller: a row whose URL is a
refused literal address, or whose input leaves the output location, fails with the runner's
sentence and never gets a Job; an allowed address is claimed and its pod gets the allowlist."""

from __future__ import annotations

import json

import pytest

from runner.payloads import PayloadError, parse_payload
from runner.rules import NetworkRules

pytestmark = pytest.mark.cluster

REFUSED = {
    "metadata": ("ingest", {"url": "http://169.254.169.254/latest/meta-data/"}),
    "loopback": ("ingest", {"url": "http://[::1]:8080/a.mp3"}),
    "service": ("ingest", {"url": "http://10.96.0.1/"}),
    "escape": ("preview", {"input": "../../etc/passwd"}),
}


def runner_says(job_type: str, payload: dict[str, str], allowed: str) -> str:
    try:
        parse_payload(job_type, json.dumps(payload), rules=NetworkRules.parse(allowed))
    except PayloadError as e:
        return str(e)
    raise AssertionError(f"the runner would accept {payload}")


def test_refused_rows_fail_at_claim_and_never_get_a_job(controller, rows, batch_v1, namespace):
    allowed = "192.168.50.0/24"
    controller.start(AUDIOJOB_RUNNER__ALLOWED_NETWORKS=allowed)
    for job_id, (job_type, payload) in REFUSED.items():
        rows.insert(job_id, type=job_type, payload=payload)
    rows.insert("trusted", payload={"url": "http://192.168.50.7:9000/a.mp3"})
    assert rows.wait_status("trusted", "complete")
    for job_id, (job_type, payload) in REFUSED.items():
        row = rows.wait_status(job_id, "failed")
        assert (row.error_kind, row.error) == ("permanent", runner_says(job_type, payload, allowed))
        assert row.k8s_job is None
    assert rows.get("metadata").error.startswith(
        "refused to fetch http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a "
        "link-local address"
    )
    jobs = batch_v1.list_namespaced_job(namespace).items
    assert [j.metadata.annotations["audiojob.dev/job-id"] for j in jobs] == ["trusted"]
    env = {e.name: e.value for e in jobs[0].spec.template.spec.containers[0].env}
    assert env["AUDIOJOB_ALLOWED_NETWORKS"] == allowed
