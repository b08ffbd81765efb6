"""The address and path rules at claim, through the store on every backend: a row the runner
would refuse never gets a pod, and its error is the runner's own sentence."""

from __future__ import annotations

from controller.settings import DbSettings
from controller.store import JobStore
from runner.payloads import PayloadError, parse_payload
from runner.rules import NetworkRules
from tests.store.conftest import FAST_RETRY

T0 = 1_700_000_000_000

REFUSED = {
    "metadata": ("ingest", {"url": "http://169.254.169.254/latest/meta-data/"}),
    "loopback": ("ingest", {"url": "http://127.0.0.1:6443/api"}),
    "private": ("ingest", {"url": "https://10.96.0.1/"}),
    "decimal": ("ingest", {"url": "http://2130706433/"}),
    "escape": ("preview", {"input": "../../etc/passwd"}),
}


def runner_sentence(job_type: str, payload: dict[str, str]) -> str:
    """What the runner's own check says about the payload (it runs the same function)."""
    import json

    try:
        parse_payload(job_type, json.dumps(payload), rules=NetworkRules.from_env({}))
    except PayloadError as e:
        return str(e)
    raise AssertionError(f"the runner would accept {payload}")


async def test_refused_rows_fail_at_claim_with_the_runners_sentence(store: JobStore) -> None:
    for n, (job_id, (job_type, payload)) in enumerate(REFUSED.items()):
        await store.insert(job_id=job_id, type=job_type, payload=payload, now_ms=T0 + n)
    await store.insert(job_id="public", type="ingest", payload={"url": "https://example.com/a"})
    claim = await store.claim(worker_id="w", limit=10, now_ms=T0 + 10)
    assert [j.row.job_id for j in claim.jobs] == ["public"]
    assert {r.row.job_id for r in claim.rejected} == set(REFUSED)
    for job_id, (job_type, payload) in REFUSED.items():
        row = await store.get(job_id)
        assert row is not None
        expected = runner_sentence(job_type, payload)
        assert (row.status, row.error_kind, row.error) == ("failed", "permanent", expected)
    metadata = await store.get("metadata")
    assert metadata is not None and metadata.error == (
        "refused to fetch http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a "
        "link-local address (where cloud metadata services answer); job pods fetch only from "
        "public addresses (if this source is trusted, add 169.254.169.254 or its network to "
        "AUDIOJOB_ALLOWED_NETWORKS, chart value runner.allowedNetworks)"
    )
    escape = await store.get("escape")
    assert escape is not None and escape.error == (
        "input '../../etc/passwd' must be a relative path inside the output location "
        "(no leading /, no .. or empty parts) or an s3:// URL"
    )


async def test_an_allowed_network_is_claimed(db: DbSettings) -> None:
    async with await JobStore.open(db, retry=FAST_RETRY) as store:
        store.payload_rules = NetworkRules.parse("10.96.0.0/12")
        await store.insert(job_id="minio", type="ingest", payload={"url": "http://10.96.0.9/a"})
        await store.insert(job_id="other", type="ingest", payload={"url": "http://10.0.0.9/a"})
        claim = await store.claim(worker_id="w", limit=10)
        assert [j.row.job_id for j in claim.jobs] == ["minio"]
        assert [r.row.job_id for r in claim.rejected] == ["other"]
