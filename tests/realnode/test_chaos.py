"""Chaos on real pods: the chart helm-installed, the controller a pod on the real node, the
database the libSQL test server on the bridge. Each case inserts 10 ingests of a generated
WAV (real ffmpeg with loudness normalisation in each pod) and one of a missing source, waits
until ffmpeg works for several rows, strikes once, and then checks that:

- every row ended once: complete with a result, or failed with a sentence; the attempts
  ledger, the Jobs the API server had and the row agree; attempts never overlap;
- at no instant did two runner pods, or two ffmpeg processes, work for one row (the host's
  process table, sampled throughout, each process mapped to its row by its pod's cgroup);
- nothing is left: runner pods, Jobs, processes or mounts.

Each case prints one line of the results table in docs/development.md (run with `-s`)."""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest

from controller.settings import DbSettings
from devcluster.controlplane import LocalCluster
from devcluster.hrana_server import HranaServer, running_server
from devcluster.node import NodeUnavailable, RealNode
from devcluster.node.network import cut_off
from devcluster.realjobs import create_output_volume
from runner.payloads import JOB_TYPES
from tests.helpers import wait_for
from tests.realnode.chaos import (
    ApiRecord,
    HostSampler,
    Table,
    ffmpegs,
    leftovers,
    pod_processes,
    verdict,
)
from tests.realnode.conftest import helm_installed, real_chart_values
from tests.realnode.test_jobs import tone
from tests.runner.conftest import Route, media_server

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.realnode,
    pytest.mark.slow,
    # A hang guard, not a limit on the case: the first case also pays for the cluster, the node
    # and the helm install, and each case's own waits have deadlines of their own.
    pytest.mark.timeout(20 * 60),
]

ROWS = 10  # ingests of the tone, plus one of a missing source
SECONDS_OF_AUDIO = 60  # seconds of ffmpeg per row on two shared cores
# The chart's default. 25 s killed every runner of a first run: on two cores shared with four
# other agents' clusters (load 20), a pod's Python took longer than that to send its first beat.
HEARTBEAT_STALE = 60
NODE_OUTAGE = HEARTBEAT_STALE + 15  # past the 50 s node grace period: the node goes NotReady
DB_OUTAGE = 30
CONTROLLER = "app.kubernetes.io/component=controller"


@dataclass
class Stage:
    """One helm install shared by every case; each case brings its own rows."""

    node: RealNode
    namespace: str
    core: kubernetes.client.CoreV1Api
    database: HranaServer
    table: Table
    source: str
    missing: str

    def controller_pod(self) -> Any:
        """The controller pod that runs and is ready (one: the Deployment has one replica)."""

        def ready() -> Any:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=CONTROLLER).items
            return next(
                p
                for p in pods
                if not p.metadata.deletion_timestamp
                and p.status.phase == "Running"
                and all(cs.ready for cs in p.status.container_statuses or [])
            )

        return wait_for(ready, timeout=180, interval=0.5, message="a ready controller pod")


def chaos_values(stage_node: RealNode, *, database_url: str, claim: str) -> dict[str, Any]:
    values = real_chart_values(stage_node, database_url=database_url, claim=claim)
    small = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    values["controller"]["resources"] = small
    # Finished Jobs go soon, so "nothing left behind" is seen within the case.
    values["runner"]["ttlSecondsAfterFinished"] = 2
    values["claim"]["heartbeatIntervalSeconds"] = 1
    # A replaced controller pod takes the Lease over within seconds.
    values["ownership"] = {"leaseSeconds": 6, "renewDeadlineSeconds": 4, "retryPeriodSeconds": 1}
    values["claim"]["maxConcurrent"] = ROWS + 1
    values["runner"]["resources"] = {t: small for t in JOB_TYPES}
    values["timeouts"] = {
        "ingestSeconds": 300,
        "pendingSeconds": 180,
        "heartbeatStaleSeconds": HEARTBEAT_STALE,
        "progressStalledSeconds": 240,
        "cancelGraceSeconds": 2,
        "retryBackoffSeconds": 0,
    }
    values["queueMetrics"] = {"enabled": False}
    return values


@pytest.fixture(scope="module")
def stage(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    try:
        node = cluster.start_real_node()
    except NodeUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    tmp = tmp_path_factory.mktemp("chaos")
    api = cluster.api_client()
    core = kubernetes.client.CoreV1Api(api)
    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    gateway = node.network.gateway
    try:
        with (
            running_server(str(tmp / "jobs.db"), host=gateway) as database,
            media_server(gateway) as media,
        ):
            volume = create_output_volume(cluster, namespace=namespace, host_dir=tmp / "output")
            wav = tone(tmp / "tone.wav", seconds=SECONDS_OF_AUDIO).read_bytes()
            values = chaos_values(node, database_url=database.url("libsql"), claim=volume.claim)
            with helm_installed(node, namespace, values, tmp / "values.json"):
                stage = Stage(
                    node=node,
                    namespace=namespace,
                    core=core,
                    database=database,
                    table=Table(DbSettings(url=database.url("http"))),
                    source=media.serve("/tone.wav", Route(body=wav, content_type="audio/wav")),
                    missing=media.serve("/gone.wav", Route(status=404)),
                )
                stage.controller_pod()
                yield stage
            cluster.kubectl("delete", "pv", volume.pv, "--wait=false", check=False)
    finally:
        core.delete_namespace(namespace, propagation_policy="Background", grace_period_seconds=0)


# --- the faults ---------------------------------------------------------------------------

Sample = dict[str, list[tuple[int, str]]]


@dataclass(frozen=True)
class Landed:
    """What shows a fault landed, and the row it aimed at (if one)."""

    evidence: str
    row: str | None = None


Fault = Callable[["Stage", ApiRecord, Sample], Landed]


def restart(daemon: str, sig: signal.Signals) -> Fault:
    """Kill one of the node's daemons with `sig`, start it again, wait until it serves."""

    def fault(stage: Stage, record: ApiRecord, sample: Sample) -> Landed:
        before = stage.node.procs[daemon].pid
        stage.node.kill_daemon(daemon, sig)
        stage.node.revive_daemon(daemon)
        after = stage.node.procs[daemon].pid
        return Landed(f"{daemon} {before} got {sig.name}, {after} serving")

    return fault


def delete_controller_pod(stage: Stage, record: ApiRecord, sample: Sample) -> Landed:
    old = stage.controller_pod()
    stage.core.delete_namespaced_pod(old.metadata.name, stage.namespace)
    new = wait_for(
        lambda: (p := stage.controller_pod()).metadata.uid != old.metadata.uid and p,
        timeout=180,
        message="a new controller pod ready",
    )
    return Landed(f"controller pod {old.metadata.name} deleted, {new.metadata.name} took over")


def evict_runner_pod(stage: Stage, record: ApiRecord, sample: Sample) -> Landed:
    pods = {p.uid: p for p in record.of("Pod")}
    busy = [u for u, ps in sample.items() if u in pods and any(n == "ffmpeg" for _, n in ps)]
    victim = pods[busy[0]]
    body = kubernetes.client.V1Eviction(
        metadata=kubernetes.client.V1ObjectMeta(name=victim.name, namespace=stage.namespace)
    )
    stage.core.create_namespaced_pod_eviction(victim.name, stage.namespace, body)
    return Landed(f"evicted {victim.name} mid-ffmpeg", row=victim.job_id)


def stop_node(stage: Stage, record: ApiRecord, sample: Sample) -> Landed:
    stage.node.kill_daemon("kubelet", signal.SIGTERM)
    stage.node.kill_daemon("containerd", signal.SIGTERM)
    time.sleep(NODE_OUTAGE)  # the outage itself: longer than the heartbeat-stale clock
    stage.node.revive_daemon("containerd")
    stage.node.revive_daemon("kubelet")
    return Landed(
        f"kubelet and containerd down {NODE_OUTAGE} s (heartbeat-stale {HEARTBEAT_STALE} s)"
    )


def cut_database(stage: Stage, record: ApiRecord, sample: Sample) -> Landed:
    pod = stage.controller_pod()
    with cut_off(
        source=pod.status.pod_ip, to=stage.node.network.gateway, port=stage.database.port
    ) as dropped:
        time.sleep(DB_OUTAGE)  # the partition itself
        lost = dropped()
    assert lost > 0, "the controller sent nothing to the database while it was cut off"
    return Landed(
        f"{lost} packets from {pod.metadata.name} to the database dropped in {DB_OUTAGE} s"
    )


CASES: dict[str, Fault] = {
    "kubelet-kill9": restart("kubelet", signal.SIGKILL),
    "containerd-restart": restart("containerd", signal.SIGTERM),
    "controller-pod-deleted": delete_controller_pod,
    "runner-evicted": evict_runner_pod,
    "node-stopped": stop_node,
    "database-cut": cut_database,
}


@pytest.mark.parametrize("case", list(CASES))
def test_chaos(stage: Stage, case: str) -> None:
    t0 = time.monotonic()
    stage.controller_pod()
    ids = [f"{case}-{i:02d}" for i in range(ROWS)]
    payload = {"url": stage.source, "format": "mp3", "normalize_loudness": True}
    sampler = HostSampler()
    with ApiRecord(stage.core.api_client, stage.namespace) as record, sampler.running():
        stage.table.insert([(i, payload) for i in ids] + [(f"{case}-gone", {"url": stage.missing})])
        ids.append(f"{case}-gone")

        def in_flight() -> tuple[int, int, Sample] | None:
            sample = pod_processes()
            runners = {p.uid for p in record.of("Pod")}
            working = ffmpegs(sample, runners)
            processing = sum(r.status == "processing" for r in stage.table.rows(ids).values())
            return (processing, working, sample) if working >= 2 else None

        processing, working, sample = wait_for(
            in_flight, timeout=240, interval=0.2, message="ffmpeg working for two rows"
        )
        landed = CASES[case](stage, record, sample)
        rows = wait_for(
            lambda: stage.table.ended(ids), timeout=420, interval=1, message="every row ended"
        )
        ctrd = stage.node.containerd
        with contextlib.suppress(AssertionError):  # what is left is reported below
            wait_for(
                lambda: not leftovers(stage.core, stage.namespace, ctrd, stage.node.name),
                timeout=120,
                interval=1,
                message="nothing left behind",
            )
        left = leftovers(stage.core, stage.namespace, ctrd, stage.node.name)
    ledger = stage.table.attempts(ids)
    judged = verdict(rows, ledger, record, sampler)
    took = time.monotonic() - t0
    print(
        f"\n| {case} | {len(ids)} | {processing} rows processing, {working} ffmpeg | "
        f"{', '.join(f'{n} {s}' for s, n in sorted(judged.outcomes.items()))}; "
        f"retried {len(judged.retried)} {judged.retried} | {len(judged.double_runs)} | "
        f"{len(left)} | {took:.0f} s |\n  {landed.evidence}"
    )
    # ffmpeg worked for two rows or more when it struck (what the wait above waited for).
    assert processing > 0, "no row was processing when the fault struck"
    assert judged.problems == [], judged.problems
    assert left == [], left
    assert rows[f"{case}-gone"].status == "failed" and "404" in (rows[f"{case}-gone"].error or "")
    if landed.row is not None:
        # An eviction is a disruption: the attempt is retried, not failed, and not lost.
        assert landed.row in judged.retried, (landed.row, ledger[landed.row])
