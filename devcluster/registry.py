"""A real OCI registry on loopback: CNCF distribution's `registry`, built from the Go module
proxy by build-binaries.sh, storing into a directory the caller owns.

The release tests push the image and the chart to it, and the real node's containerd pulls
from it over plain HTTP. Its access log (combined log format) is kept so a test can see
which blobs a pull really fetched.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devcluster.controlplane import bin_dir, free_port

ACCESS_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) ')


@dataclass(frozen=True)
class Registry:
    """A running registry: `host` is `127.0.0.1:<port>`, as image references name it."""

    host: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def requests(self) -> list[tuple[str, str, int]]:
        """The access log so far (combined log format): (method, path, status) per request."""
        return [
            (m[1], m[2], int(m[3]))
            for m in ACCESS_LINE.finditer(self.log.read_text(errors="replace"))
        ]

    def tags(self, repository: str) -> list[str]:
        """The repository's tags (empty when it has none or does not exist)."""
        try:
            with urllib.request.urlopen(f"{self.url}/v2/{repository}/tags/list", timeout=10) as r:
                return list(json.load(r).get("tags") or [])
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise

    def manifest(self, repository: str, reference: str) -> dict[str, object]:
        accept = ", ".join(
            [
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            ]
        )
        req = urllib.request.Request(
            f"{self.url}/v2/{repository}/manifests/{reference}", headers={"Accept": accept}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            doc: dict[str, object] = json.load(r)
            return doc


def _config(storage: Path, port: int, *, read_only: bool) -> str:
    # maintenance.readonly makes every push fail with the registry's own error: the tests of
    # a registry that refuses the push use it.
    readonly = "true" if read_only else "false"
    return f"""version: 0.1
log:
  level: warn
  formatter: json
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: {readonly}
http:
  addr: 127.0.0.1:{port}
  secret: {secrets.token_hex(16)}
  draintimeout: 1s
"""


@contextlib.contextmanager
def running_registry(workdir: Path, *, read_only: bool = False) -> Iterator[Registry]:
    """A registry serving `workdir/storage` on a free loopback port until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(_config(workdir / "storage", port, read_only=read_only))
    registry = Registry(host=f"127.0.0.1:{port}", log=workdir / "registry.log")
    with registry.log.open("w") as log:
        proc = subprocess.Popen(
            [str(bin_dir() / "registry"), "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{registry.url}/v2/", timeout=2):
                    break
            except (OSError, urllib.error.URLError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = registry.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the registry did not start: {tail}") from None
                time.sleep(0.1)
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
