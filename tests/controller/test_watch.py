"""Our watches (controller.watch) on the real API server: events reach the view, an expired
resourceVersion leads to a relist that misses nothing, and an API server restart is survived."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest
from prometheus_client import REGISTRY

from controller.engine.view import View
from controller.kube import Kube
from controller.watch import Watcher
from devcluster.controlplane import LocalCluster
from tests.helpers import async_wait_for


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def job_body(name: str, **annotations: str) -> dict[str, Any]:
    """A managed Job that never gets pods (suspended): only its own events matter here."""
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "audiojob-operator"},
            "annotations": {"audiojob.dev/job-id": name, **annotations},
        },
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}],
                }
            },
        },
    }


def compact_etcd(cluster: LocalCluster) -> None:
    """Compact etcd's history up to now (the API server does it every 5 min): watching from
    an older version then fails with 410 Gone, as it does in a long-running cluster."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"http://127.0.0.1:{cluster.ports['etcd']}/v3/kv/{path}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    revision = int(post("range", {"key": "AA=="})["header"]["revision"])
    post("compaction", {"revision": revision, "physical": True})


@dataclass
class Fixture:
    kube: Kube
    view: View
    watcher: Watcher
    batch: kubernetes.client.BatchV1Api
    namespace: str
    relists: list[asyncio.Task[None]] = field(default_factory=list)

    def create(self, name: str, **annotations: str) -> None:
        self.batch.create_namespaced_job(self.namespace, job_body(name, **annotations))

    def delete(self, name: str) -> None:
        self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")

    async def until_seen(self, *names: str, gone: tuple[str, ...] = ()) -> None:
        async def check() -> bool:
            return all(self.view.job(n) for n in names) and not any(self.view.job(n) for n in gone)

        await async_wait_for(check, timeout=60, message=f"view shows {names}, not {gone}")


@pytest.fixture
async def watched(cluster: LocalCluster, namespace: str) -> AsyncIterator[Fixture]:
    api = cluster.api_client()
    kube = await Kube.connect(namespace, config_file=cluster.kubeconfig)
    view = View()
    holder: list[Fixture] = []

    def on_gone() -> None:
        # As the engine does: the next cycle relists.
        holder[0].relists.append(asyncio.create_task(view.relist(kube)))

    watcher = Watcher(kube=kube, view=view, on_event=view.apply, on_gone=on_gone)
    fx = Fixture(kube, view, watcher, kubernetes.client.BatchV1Api(api), namespace)
    holder.append(fx)
    yield fx
    for task in fx.relists:
        await task
    await kube.close()
    api.close()


async def run(watcher: Watcher) -> asyncio.Task[None]:
    return asyncio.create_task(watcher.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_events_reach_the_view_from_the_relist_on(watched: Fixture) -> None:
    watched.create("aj-before")
    await watched.view.relist(watched.kube)
    assert watched.view.job("aj-before") is not None
    task = await run(watched.watcher)
    try:
        watched.create("aj-after")
        await watched.until_seen("aj-before", "aj-after")
        watched.delete("aj-before")
        await watched.until_seen("aj-after", gone=("aj-before",))
        assert watched.watcher.gone_count == 0
    finally:
        await stop(task)


async def test_an_event_larger_than_the_stream_readers_line_limit_arrives(
    watched: Fixture,
) -> None:
    await watched.view.relist(watched.kube)
    task = await run(watched.watcher)
    try:
        # 200 KiB of annotation (the API allows 256 KiB): one watch line well over the 128 KiB
        # aiohttp allows by default (controller.kube raises it), then a small event behind it.
        watched.create("aj-big", **{"example.com/notes": "x" * 200 * 1024})
        watched.create("aj-small")
        await watched.until_seen("aj-big", "aj-small")
    finally:
        await stop(task)


async def test_an_expired_version_relists_and_misses_nothing(
    watched: Fixture, cluster: LocalCluster
) -> None:
    watched.create("aj-old")
    await watched.view.relist(watched.kube)
    # While nothing watches: one Job is deleted (a DELETED event nobody will stream) and one
    # created; then the API server restarts (a new watch cache, starting now) and etcd's
    # history is compacted, so the relist's version is too old to watch from.
    watched.delete("aj-old")
    watched.create("aj-new")
    await asyncio.to_thread(cluster.restart_apiserver)
    compact_etcd(cluster)
    relists = sample("audiojob_watch_relists_total", kind="job")
    task = await run(watched.watcher)
    try:
        await watched.until_seen("aj-new", gone=("aj-old",))
        assert watched.watcher.gone_count >= 1
        assert sample("audiojob_watch_relists_total", kind="job") >= relists + 1
        assert watched.view.generation >= 2, "a relist replaced the view"
        # And it watches on from the new list's version.
        watched.create("aj-later")
        await watched.until_seen("aj-new", "aj-later")
    finally:
        await stop(task)


async def test_an_api_server_restart_mid_watch_is_survived(
    watched: Fixture, cluster: LocalCluster
) -> None:
    await watched.view.relist(watched.kube)
    restarts = sample("audiojob_watch_restarts_total", kind="pod")
    task = await run(watched.watcher)
    try:
        watched.create("aj-a")
        await watched.until_seen("aj-a")
        assert sample("audiojob_watch_up", kind="job") == 1
        # Blocking (it waits for /readyz): off the loop, so the watches see the drop.
        await asyncio.to_thread(cluster.restart_apiserver, down_seconds=2)
        watched.delete("aj-a")
        name = f"aj-b-{uuid.uuid4().hex[:6]}"
        watched.create(name)
        await watched.until_seen(name, gone=("aj-a",))
        assert not task.done(), "the watches must outlive the restart"
        assert sample("audiojob_watch_restarts_total", kind="pod") >= restarts + 1

        async def pod_watch_up() -> bool:
            return sample("audiojob_watch_up", kind="pod") == 1

        await async_wait_for(pod_watch_up, timeout=60, message="the pod watch streams again")
    finally:
        await stop(task)
