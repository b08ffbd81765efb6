"""Loading `kubernetes.aio`'s client the way the controller needs it, and the two gaps in it
filled where the client is built (controller.kube makes the calls):
  - aiohttp's `trust_env`, which the library turns on: `proxy_once`;
  - a client certificate read only once: `ClientCert`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from aiohttp.helpers import get_env_proxy_for_url
from kubernetes.aio import client as aio
from kubernetes.aio import config as aio_config
from yarl import URL

log = logging.getLogger("audiojob.kube")
CERT_CHECK_SECONDS = 1.0


async def load_config(config_file: str | Path | None = None) -> tuple[aio.Configuration, Any]:
    """In-cluster credentials, else the kubeconfig (`config_file`, `KUBECONFIG` or
    ~/.kube/config); with the kubeconfig's loader, which renews exec-plugin tokens."""
    config = aio.Configuration()
    if config_file is None:
        try:
            aio_config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
            return config, None
        except aio_config.ConfigException:
            config_file = os.environ.get("KUBECONFIG") or None
    # persist_config off: the root filesystem is read-only in the chart, and nothing we load
    # needs writing back.
    loader = await aio_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(config_file) if config_file else None,
        client_configuration=config,
        persist_config=False,
    )
    return config, loader


def proxy_once(config: aio.Configuration) -> None:
    """HTTPS_PROXY/NO_PROXY as aiohttp's `trust_env` reads them, read once here, and
    `trust_env` off. The library turns it on, and aiohttp then makes two trips to a thread per
    request (the proxy and ~/.netrc), which doubled a Job creation's CPU; and a ~/.netrc entry
    for the API server's host makes every request fail ("Cannot combine AUTHORIZATION header
    with AUTH argument"). A kubeconfig's proxy-url, when set, wins as before."""
    config.client_session_kwargs = {**(config.client_session_kwargs or {}), "trust_env": False}
    if config.proxy:
        return
    with contextlib.suppress(LookupError):
        proxy, _ = get_env_proxy_for_url(URL(config.host))
        config.proxy = str(proxy)


class ClientCert:
    """Reloads the kubeconfig's client certificate when its files change (a cert-manager or
    kubelet rotation): the library builds its SSL context once, with the files as they were.

    Like client-go's transport/cert_rotation.go, the pooled connections are then closed (the
    next request opens a new session with the new certificate); in-flight requests fail as a
    dropped connection does, and are retried as one."""

    def __init__(self, api: aio.ApiClient) -> None:
        self._rest = api.rest_client
        config = api.configuration
        self._files = (config.cert_file, config.key_file) if config.cert_file else None
        self._stamp = self._read_stamp()
        self._checked = time.monotonic()

    def _read_stamp(self) -> tuple[tuple[int, int, int], ...]:
        if not self._files:
            return ()
        stamps = []
        for f in self._files:
            if not f:
                continue
            with contextlib.suppress(OSError):  # mid-rotation: look again next time
                s = os.stat(f)
                stamps.append((s.st_ino, s.st_size, s.st_mtime_ns))
        return tuple(stamps)

    async def check(self) -> None:
        if not self._files or time.monotonic() - self._checked < CERT_CHECK_SECONDS:
            return
        self._checked = time.monotonic()
        stamp = self._read_stamp()
        if stamp == self._stamp or len(stamp) != len([f for f in self._files if f]):
            return
        cert, key = self._files
        try:
            self._rest.ssl_context.load_cert_chain(cert, keyfile=key)
        except (OSError, ValueError) as e:  # a half-written pair: keep the old one for now
            log.warning("could not reload the client certificate %s: %s", cert, e)
            return
        self._stamp = stamp
        old, self._rest.pool_manager = self._rest.pool_manager, None
        self._rest.retry_client = None
        log.info("client certificate %s changed; reconnecting with it", cert)
        if old is not None:
            await old.close()
