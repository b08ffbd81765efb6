"""A local Debian python base image, built with mmdebstrap, for machines without a registry.

The Dockerfile builds FROM `${PYTHON_IMAGE}` (by default `python:3.11.x-slim-bookworm` from Docker
Hub). Where no registry is reachable, `make image` passes this image instead: Debian bookworm's
python 3.11 with pip, laid out as an OCI image that BuildKit reads as a named build context.
Only Debian's mirror is needed. The layout is cached under the recipe's hash, so it is built once.

    base = build_python_base(cache=CACHE)   # PythonBase(layout=..., digest="sha256:...")
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# What python:3.11-slim-bookworm offers the Dockerfile: `python` and `pip` on PATH, CA roots.
PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
# Like debian:bookworm-slim: no docs, man pages or translations in the image.
DPKG_OPTIONS = (
    *(
        f"path-exclude=/usr/share/{d}/*"
        for d in ("doc", "man", "info", "locale", "groff", "lintian")
    ),
    "path-include=/usr/share/doc/*/copyright",
)
MMDEBSTRAP_OPTIONS = (
    "--variant=apt",
    f"--include={','.join(PACKAGES)}",
    *(f"--dpkgopt={o}" for o in DPKG_OPTIONS),
    # The official image's python lives in /usr/local and takes `pip install`; Debian marks its
    # own python as externally managed (PEP 668), which would refuse the Dockerfile's install.
    '--customize-hook=rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED',
    # Device nodes are the runtime's business (it mounts /dev), not a layer's.
    "--skip=output/dev",
)
CONFIG = {
    "Env": [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
    ],
    "Cmd": ["python3"],
}
NAME = "audiojob-python-base:bookworm"


@dataclass(frozen=True)
class PythonBase:
    """An OCI image layout holding one image, and the digest of its manifest."""

    layout: Path
    digest: str
    name: str = NAME


class MissingToolError(RuntimeError):
    """A program the image build needs is not installed."""


def recipe_key() -> str:
    """Everything that decides the base's content; a change builds a new base."""
    recipe = json.dumps([SUITE, MIRRORS, MMDEBSTRAP_OPTIONS, CONFIG], sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def require(tool: str, *, package: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(
            f"{tool} is missing: install it with `apt-get install -y {package}` ({why})"
        )
    return path


def build_python_base(*, cache: Path) -> PythonBase:
    """The cached base for this recipe, built with mmdebstrap (~1 min) when absent."""
    layout = cache / "pybase" / recipe_key()
    index = layout / "index.json"
    if index.exists():
        return PythonBase(
            layout=layout, digest=json.loads(index.read_text())["manifests"][0]["digest"]
        )
    mmdebstrap = require("mmdebstrap", package="mmdebstrap", why="it builds the python base image")
    work = layout.with_name(layout.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rootfs = work / "rootfs.tar"
    t0 = time.monotonic()
    print(f"==> mmdebstrap {SUITE} python base ({', '.join(PACKAGES)})", flush=True)
    subprocess.run(
        [mmdebstrap, "--quiet", *MMDEBSTRAP_OPTIONS, SUITE, str(rootfs), *MIRRORS],
        check=True,
    )
    digest = write_oci_layout(work, layer=rootfs, config=CONFIG, name=NAME)
    rootfs.unlink()
    shutil.rmtree(layout, ignore_errors=True)
    work.rename(layout)
    size = sum(f.stat().st_size for f in layout.rglob("*") if f.is_file())
    print(f"    python base took {time.monotonic() - t0:.0f}s ({size / 2**20:.0f} MiB)")
    return PythonBase(layout=layout, digest=digest)


def write_oci_layout(layout: Path, *, layer: Path, config: dict[str, Any], name: str) -> str:
    """Packs one filesystem tarball as a single-layer OCI image; returns the manifest digest."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    diff_id = hashlib.sha256()
    compressed = blobs / "layer.tmp"
    # mtime=0: the same rootfs gives the same layer digest.
    with layer.open("rb") as src, gzip.GzipFile(compressed, "wb", compresslevel=1, mtime=0) as dst:
        while chunk := src.read(1 << 20):
            diff_id.update(chunk)
            dst.write(chunk)
    layer_desc = _descriptor(
        "application/vnd.oci.image.layer.v1.tar+gzip", _move_to_blob(compressed, blobs)
    )
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id.hexdigest()}"]},
    }
    config_desc = _descriptor(
        "application/vnd.oci.image.config.v1+json", _blob(blobs, json.dumps(image_config))
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = _descriptor(
        "application/vnd.oci.image.manifest.v1+json", _blob(blobs, json.dumps(manifest))
    )
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": name}
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]})
    )
    return str(manifest_desc["digest"])


def _blob(blobs: Path, text: str) -> Path:
    tmp = blobs / "blob.tmp"
    tmp.write_text(text)
    return _move_to_blob(tmp, blobs)


def _move_to_blob(path: Path, blobs: Path) -> Path:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return path.rename(blobs / digest.hexdigest())


def _descriptor(media_type: str, blob: Path) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{blob.name}", "size": blob.stat().st_size}
