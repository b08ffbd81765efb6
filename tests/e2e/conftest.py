"""Run the real controller process against the local control plane and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controller.settings import DbSettings
from controller.store import JobRow, JobStore
from devcluster.controlplane import LocalCluster, free_port
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Controller:
    cluster: LocalCluster
    namespace: str
    db_path: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self, **extra_env: str) -> None:
        self.port = free_port()
        env = (
            os.environ
            | {
                "KUBECONFIG": str(self.cluster.kubeconfig),
                "TURSO_DATABASE_URL": f"file:{self.db_path}",
                "AUDIOJOB_KUBE__NAMESPACE": self.namespace,
                "AUDIOJOB_METRICS__PORT": str(self.port),
                "AUDIOJOB_METRICS__HOST": "127.0.0.1",
                "AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS": "0.5",
                "AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS": "0.5",
                "AUDIOJOB_RUNNER__SERVICE_ACCOUNT": "default",
                "AUDIOJOB_TIMEOUTS__CANCEL_GRACE_SECONDS": "2",
                "AUDIOJOB_TIMEOUTS__RETRY_BACKOFF_SECONDS": "0",
                # Leader election on a short clock, so a SIGKILLed leader's successor starts
                # within seconds (the defaults are client-go's 15/10/2 s).
                "AUDIOJOB_OWNERSHIP__LEASE_SECONDS": "3",
                "AUDIOJOB_OWNERSHIP__RENEW_DEADLINE_SECONDS": "2",
                "AUDIOJOB_OWNERSHIP__RETRY_PERIOD_SECONDS": "0.5",
                "PYTHONPATH": str(ROOT),
            }
            | self.env
            | extra_env
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /readyz says 200: kopf and the engine are running (a SIGTERM that lands before
        Python has even reached our code ends the process with the default action)."""

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)

        wait_for(ready, timeout=timeout, interval=0.2, message="the controller's /readyz")

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status, body) of /readyz: 200 while it leads and runs, 503 while it stands by."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        code = self.proc.wait(30)
        self.proc = None
        return code

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class Rows:
    """Synchronous access to the job table, as the web app would have."""

    def __init__(self, path: Path) -> None:
        self.db = DbSettings(url=f"file:{path}")

    def _run(self, fn: Any) -> Any:
        async def go() -> Any:
            store = await JobStore.open(self.db)
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def insert(self, job_id: str, type: str = "ingest", payload: Any = None, **kw: Any) -> None:
        payload = {"url": "https://example.com/a.mp3"} if payload is None else payload
        self._run(lambda s: s.insert(job_id=job_id, type=type, payload=payload, **kw))

    def get(self, job_id: str) -> JobRow:
        row = self._run(lambda s: s.get(job_id))
        assert row is not None
        return row

    def cancel(self, job_id: str) -> bool:
        return bool(self._run(lambda s: s.cancel(job_id)))

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 60) -> JobRow:
        return wait_for(
            lambda: (
                (r := self.get(job_id))
                and r.status in statuses
                and (r.status != "cancelled" or r.finished_at is not None)
                and r
            ),
            timeout=timeout,
            message=f"{job_id} to become {'/'.join(statuses)}",
        )


@pytest.fixture
def rows(tmp_path: Path) -> Rows:
    return Rows(tmp_path / "jobs.db")


@pytest.fixture
def controller(
    cluster: LocalCluster, namespace: str, tmp_path: Path, rows: Rows
) -> Iterator[Controller]:
    ctl = Controller(cluster, namespace, tmp_path / "jobs.db", tmp_path / "controller.log")
    yield ctl
    if ctl.proc is not None:
        ctl.stop(signal.SIGKILL)


@pytest.fixture
def controllers(
    cluster: LocalCluster, tmp_path: Path, rows: Rows
) -> Iterator[Callable[[str, str], Controller]]:
    """More controllers on the same database: `make(namespace, name)`."""
    made: list[Controller] = []

    def make(namespace: str, name: str) -> Controller:
        ctl = Controller(cluster, namespace, tmp_path / "jobs.db", tmp_path / f"{name}.log")
        made.append(ctl)
        return ctl

    yield make
    for ctl in made:
        if ctl.proc is not None:
            ctl.stop(signal.SIGKILL)


@pytest.fixture
def more_namespaces(
    api: kubernetes.client.ApiClient,
) -> Iterator[Callable[[], str]]:
    """Extra namespaces for tests with several installations; deleted after the test."""
    core = kubernetes.client.CoreV1Api(api)
    made: list[str] = []

    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        core.create_namespace({"metadata": {"name": name}})
        made.append(name)
        wait_for(
            lambda: core.read_namespaced_service_account("default", name),
            timeout=30,
            message=f"default ServiceAccount in {name}",
        )
        return name

    yield make
    for name in made:
        core.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)
