"""The connection settings of a kubeconfig that the aiohttp client (controller.kube) must honour
as the threaded official client did: `proxy-url` (an HTTP CONNECT proxy, with the
Configuration's `proxy_headers`; HTTPS_PROXY and NO_PROXY as the Configuration resolves them),
`tls-server-name` and `insecure-skip-tls-verify`; and the refusal of a SOCKS proxy. Against the
real local API server, through a CONNECT proxy and a TCP forwarder of our own on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from controller.kube import Kube, KubeError
from devcluster.controlplane import LocalCluster
from runner import contract as c

LOOPBACK = ("127.0.0.1", "127.0.0.2")
"""Where our proxy and forwarder may connect (tests talk only to this machine)."""


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    writer.close()


class Relay:
    """A loopback server relaying each connection somewhere local: an HTTP CONNECT proxy
    (`target` None: the CONNECT line names the target) or a plain TCP forwarder."""

    def __init__(self, host: str = "127.0.0.1", target: tuple[str, int] | None = None) -> None:
        self.host = host
        self.target = target
        self.tunnels = 0
        self.connect_headers: list[dict[str, str]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        target = self.target
        if target is None:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            line, *lines = head.strip().split("\r\n")
            method, where, _ = line.split(" ")
            host, port = where.rsplit(":", 1)
            if method != "CONNECT" or host not in LOOPBACK:
                writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                writer.close()
                return
            self.connect_headers.append(dict(h.split(": ", 1) for h in lines))
            target = (host, int(port))
        up_reader, up_writer = await asyncio.open_connection(*target)
        self._writers.append(up_writer)
        self.tunnels += 1
        if self.target is None:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def kubeconfig_configuration(
    cluster: LocalCluster, tmp: Path, **fields: Any
) -> kubernetes.client.Configuration:
    """The admin kubeconfig with `fields` set on (or, when None, removed from) its cluster,
    loaded by the official loader as the controller loads it."""
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = doc["clusters"][0]["cluster"]
    for key, value in fields.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(path), client_configuration=config)  # type: ignore[no-untyped-call]
    return config


@contextlib.asynccontextmanager
async def kube_of(config: kubernetes.client.Configuration, namespace: str) -> AsyncIterator[Kube]:
    kube = Kube(config, namespace)
    try:
        yield kube
    finally:
        await kube.close()


async def job_names(kube: Kube) -> list[str]:
    return [job["metadata"]["name"] async for page, _ in kube.list_jobs() for job in page]


def job(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {c.LABEL_MANAGED_BY: c.LABEL_MANAGED_BY_VALUE}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "audiojob-runner:never-pulled"}],
                }
            }
        },
    }


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_a_kubeconfig_proxy_url_carries_lists_and_creates_through_the_proxy(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    async with Relay() as proxy:
        config = kubeconfig_configuration(cluster, tmp_path, **{"proxy-url": proxy.url})
        config.proxy_headers = {"X-Proxy-Ticket": "t-1"}
        async with kube_of(config, namespace) as kube:
            assert await job_names(kube) == []
            assert await kube.create_job(job("aj-via-proxy")) is True
            assert await job_names(kube) == ["aj-via-proxy"]
        assert proxy.tunnels > 0, "every call went through the proxy"
        assert all(h.get("X-Proxy-Ticket") == "t-1" for h in proxy.connect_headers)


async def test_https_proxy_from_the_environment_is_used_unless_no_proxy_names_the_server(
    cluster: LocalCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Relay() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        async with kube_of(kubeconfig_configuration(cluster, tmp_path), namespace) as kube:
            assert await job_names(kube) == []
        assert proxy.tunnels == 1
        monkeypatch.setenv("NO_PROXY", "example.invalid,127.0.0.1")
        async with kube_of(kubeconfig_configuration(cluster, tmp_path), namespace) as kube:
            assert await job_names(kube) == []
        assert proxy.tunnels == 1, "NO_PROXY matched the server: a direct connection"


async def test_tls_server_name_verifies_an_address_outside_the_certificate(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    # 127.0.0.2 is not among the serving certificate's names (devcluster/pki.py).
    port = int(cluster.server.rsplit(":", 1)[1])
    async with Relay("127.0.0.2", target=("127.0.0.1", port)) as forward:
        server = f"https://127.0.0.2:{forward.port}"
        named = kubeconfig_configuration(
            cluster, tmp_path, server=server, **{"tls-server-name": "kubernetes.default.svc"}
        )
        async with kube_of(named, namespace) as kube:
            assert await job_names(kube) == []
        unnamed = kubeconfig_configuration(cluster, tmp_path, server=server)
        async with kube_of(unnamed, namespace) as kube:
            with pytest.raises(KubeError, match=r"list Jobs: .*certificate"):
                await job_names(kube)
        insecure = kubeconfig_configuration(
            cluster,
            tmp_path,
            server=server,
            **{"certificate-authority": None, "insecure-skip-tls-verify": True},
        )
        async with kube_of(insecure, namespace) as kube:
            assert await job_names(kube) == []
        assert forward.tunnels >= 3, "all three connected by the address outside the certificate"


async def test_a_socks_proxy_is_refused_at_start_with_what_to_change(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = kubeconfig_configuration(
        cluster, tmp_path, **{"proxy-url": "socks5://user:secret@127.0.0.1:1080"}
    )
    with pytest.raises(KubeError) as refused:
        Kube(config, "default")
    message = str(refused.value)
    assert not refused.value.transient
    assert "socks5://127.0.0.1:1080" in message and "secret" not in message
    assert "proxy-url" in message and "http:// (CONNECT) proxy" in message


def test_the_controller_exits_at_once_with_the_socks_sentence(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    kubeconfig_configuration(cluster, tmp_path, **{"proxy-url": "socks5://127.0.0.1:1080"})
    env = {
        **os.environ,
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "TURSO_DATABASE_URL": f"file:{tmp_path / 'jobs.db'}",
        "AUDIOJOB_KUBE__NAMESPACE": "default",
        "AUDIOJOB_METRICS__PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "controller"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "audiojob-controller: The Kubernetes API proxy socks5://127.0.0.1:1080" in done.stderr
