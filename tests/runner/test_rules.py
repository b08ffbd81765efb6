"""One set of payload rules: the controller's claim-time check and the runner give every bad
payload the same verdict and the same sentence, and the rules themselves read as documented."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from controller.builders import build_job
from controller.settings import SettingsError, load_settings
from controller.store.models import RejectedJob
from controller.store.store import validate_row
from runner.rules import REFUSED_NETWORKS, NetworkRules, literal_address, url_refusal
from tests.runner.conftest import Runner
from tests.store.test_payload_fuzz import row

BAD = [
    ("ingest", {"url": "http://169.254.169.254/latest/meta-data/"}, ""),
    ("ingest", {"url": "http://127.0.0.1:8080/a.mp3"}, ""),
    ("ingest", {"url": "http://10.0.0.7/a.mp3"}, ""),
    ("ingest", {"url": "https://192.168.1.1/a"}, ""),
    ("ingest", {"url": "http://100.64.0.1/a"}, ""),
    ("ingest", {"url": "http://2130706433/"}, ""),
    ("ingest", {"url": "http://0x7f.1/"}, ""),
    ("ingest", {"url": "http://[::ffff:127.0.0.1]/"}, ""),
    ("ingest", {"url": "http://[fd00::1]:9000/a"}, ""),
    ("ingest", {"url": "http://localhost/a"}, ""),
    ("ingest", {"url": "http://0.0.0.0/"}, ""),
    ("ingest", {"url": "http://10.0.0.5:9001/a"}, "10.0.0.5:9000"),  # another port
    ("ingest", {"url": "http://172.20.0.1/a"}, "10.0.0.0/8"),
    ("preview", {"input": "../../etc/passwd"}, ""),
    ("save", {"input": "/etc/passwd"}, ""),
    ("save", {"input": "a//b.mp3"}, ""),
    ("preview", {"input": "a/./b.mp3"}, ""),
    ("preview", {"input": "dir/"}, ""),
    ("ingest", {"url": "ftp://example.com/a"}, ""),  # the models' own rules, same path
]


@pytest.mark.parametrize(("job_type", "payload", "allowed"), BAD)
def test_claim_and_runner_give_the_same_verdict_and_sentence(
    runner: Runner, job_type: str, payload: dict[str, str], allowed: str
) -> None:
    at_claim = validate_row(row(job_type, json.dumps(payload)), NetworkRules.parse(allowed))
    assert isinstance(at_claim, RejectedJob)
    run = runner.run(job_type, payload, AUDIOJOB_ALLOWED_NETWORKS=allowed)
    assert run.code == 65
    assert run.message == {"ok": False, "error": at_claim.error, "kind": "permanent"}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://10.0.0.5:9000/a", "10.0.0.5:9000"),
        ("http://172.20.0.1/a", "172.16.0.0/12"),
        ("http://localhost:8080/a", "localhost:8080"),
        ("http://127.0.0.1/a", "127.0.0.0/8"),
        ("https://example.com/a", ""),  # names are the runner's to check, after DNS
        ("https://8.8.8.8/a", ""),
    ],
)
def test_allowed_or_public_sources_pass_at_claim(url: str, allowed: str) -> None:
    assert url_refusal(url, NetworkRules.parse(allowed)) is None
    at_claim = validate_row(row("ingest", json.dumps({"url": url})), NetworkRules.parse(allowed))
    assert not isinstance(at_claim, RejectedJob), at_claim


def test_odd_spellings_are_the_addresses_the_resolver_makes_of_them() -> None:
    assert str(literal_address("2130706433")) == "127.0.0.1"
    assert str(literal_address("0x7f.1")) == "127.0.0.1"
    assert str(literal_address("0177.0.0.01")) == "127.0.0.1"
    assert str(literal_address("[::ffff:127.0.0.1]")) == "::ffff:7f00:1"
    assert str(literal_address("LocalHost.")) == "127.0.0.1"
    assert str(literal_address("api.localhost")) == "127.0.0.1"
    assert literal_address("example.com") is None
    assert literal_address("cafe") is None  # a name made of hex letters is still a name


def test_cluster_networks_are_refused_even_when_public() -> None:
    rules = NetworkRules.parse(cluster="203.1.0.0/16")
    refusal = url_refusal("http://203.1.2.3/a", rules)
    assert (
        refusal is not None and "in the cluster's networks (AUDIOJOB_CLUSTER_NETWORKS)" in refusal
    )


def test_every_refused_range_is_refused_and_allowlists_open_exactly_what_they_name() -> None:
    rules = NetworkRules()
    for net, reason in REFUSED_NETWORKS:
        assert rules.refusal(net[1] if net.num_addresses > 1 else net[0], 80) == reason
    # Mapped, NAT64 and 6to4 addresses are judged by the IPv4 address inside them.
    for wrapped in ("::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1"):
        assert rules.refusal(ipaddress.ip_address(wrapped), 80) == "a private address"
    narrow = NetworkRules.parse("10.1.0.0/16, minio.storage.svc:9000")
    assert narrow.refusal(literal_address("10.1.2.3"), 80) is None  # type: ignore[arg-type]
    assert narrow.refusal(literal_address("10.2.0.1"), 80) == "a private address"  # type: ignore[arg-type]
    assert narrow.allows_endpoint("MINIO.storage.svc.", 9000)
    assert not narrow.allows_endpoint("minio.storage.svc", 9001)


@pytest.mark.parametrize("entry", ["not a network", "10.0.0.0/33", "host:port", "h:70000"])
def test_a_bad_allowlist_stops_start_up_with_one_line(
    entry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIOJOB_RUNNER__ALLOWED_NETWORKS", entry)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert str(e.value).startswith("invalid setting AUDIOJOB_RUNNER__ALLOWED_NETWORKS: ")
    assert "is not a CIDR (10.1.0.0/16), an address (10.1.2.3) or host:port" in str(e.value)


def test_a_bad_allowlist_fails_the_runner_permanently(runner: Runner) -> None:
    run = runner.run("ingest", {"url": "https://example.com/a"}, AUDIOJOB_ALLOWED_NETWORKS="x")
    assert run.code == 65
    assert run.message["error"].startswith("AUDIOJOB_ALLOWED_NETWORKS entry 'x' is not a CIDR")


def test_job_pods_get_the_rules_the_controller_claimed_with(tmp_path: Path) -> None:
    settings = load_settings(
        runner={"allowed_networks": "10.1.0.0/16,minio:9000", "cluster_networks": "10.96.0.0/12"}
    )
    job = build_job(
        job_id="j", job_type="ingest", attempt=1, trace_id="t", payload_json="{}", settings=settings
    )
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["AUDIOJOB_ALLOWED_NETWORKS"] == "10.1.0.0/16,minio:9000"
    assert env["AUDIOJOB_CLUSTER_NETWORKS"] == "10.96.0.0/12"
    default = build_job(
        job_id="j", job_type="ingest", attempt=1, trace_id="t", payload_json="{}",
        settings=load_settings(),
    )  # fmt: skip
    names = {e["name"] for e in default["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "AUDIOJOB_ALLOWED_NETWORKS" not in names
