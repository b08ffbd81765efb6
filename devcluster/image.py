"""`make image`: the image the chart deploys, built from the repo's Dockerfile, cached by content.

BuildKit (built by `build-binaries.sh`) runs the Dockerfile unchanged with its OCI (runc) worker;
the only differences from `docker build .` are the inputs a machine without a registry lacks:

- `PYTHON_IMAGE` names a local Debian python base (`devcluster.pybase`, built with mmdebstrap)
  handed to BuildKit as an OCI layout instead of `python:3.11-slim-bookworm` from Docker Hub;
- the host's CA bundle goes in as the Dockerfile's optional `ca-certificates` secret, for
  networks that intercept TLS on the way to PyPI.

The result is a docker-archive at `$AUDIOJOB_CACHE/images/audiojob-operator.tar` (tag
`audiojob-operator:<version>`, the chart's default image) beside `.ref` and `.key` files. The key
hashes the Dockerfile, the build context, the base and BuildKit's version: when it matches, a
second `make image` does nothing. The real node imports the archive into its containerd.

    python -m devcluster.image            # build if needed, print the archive and its ref
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devcluster.controlplane import CACHE, bin_dir
from devcluster.pybase import MissingToolError, PythonBase, build_python_base, require

ROOT = Path(__file__).resolve().parent.parent
IMAGES = CACHE / "images"
RUN_DIR = Path("/run/audiojob-operator/buildkit")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class ImageArchive:
    """A docker-archive on disk and the reference containerd gives it on import."""

    path: Path
    ref: str


def chart_version(root: Path = ROOT) -> str:
    """The release version's one home: the chart's `version` in Chart.yaml."""
    chart = (root / "charts" / "audiojob-operator" / "Chart.yaml").read_text()
    found = re.search(r"^version:\s*\"?([^\"\s]+)", chart, re.MULTILINE)
    if not found:
        raise ValueError(f"{root}/charts/audiojob-operator/Chart.yaml has no version")
    return found[1]


def image_name(root: Path = ROOT) -> str:
    """`audiojob-operator:<version>`: the chart's default image (its appVersion is the version)."""
    return f"audiojob-operator:{chart_version(root)}"


def context_files(root: Path) -> list[Path]:
    """The files BuildKit sends as the build context, by the repo's allow-list `.dockerignore`."""
    lines = [
        line.strip()
        for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if not lines or lines[0] != "*":
        raise ValueError(
            ".dockerignore must start with `*` and allow paths with `!path` lines: the image "
            "cache key hashes exactly the allowed files"
        )
    allowed = [line[1:].rstrip("/") for line in lines[1:] if line.startswith("!")]
    excluded = [line.removeprefix("**/") for line in lines[1:] if not line.startswith("!")]
    files: list[Path] = []
    for entry in allowed:
        path = root / entry
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in candidates:
            parts = f.relative_to(root).parts
            if f.is_file() and not any(fnmatch.fnmatch(p, x) for p in parts for x in excluded):
                files.append(f)
    return files


def content_key(*, root: Path, base: PythonBase, buildkit_version: str) -> str:
    """Changes whenever anything that goes into the image changes."""
    h = hashlib.sha256()
    for part in (buildkit_version, base.digest, image_name(root)):
        h.update(part.encode() + b"\0")
    for f in [root / "Dockerfile", root / ".dockerignore", *context_files(root)]:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build_image(*, root: Path = ROOT, cache: Path = CACHE) -> ImageArchive:
    """The image archive for the current tree: from the cache, or built (~1-2 min)."""
    images = cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    archive = ImageArchive(path=images / "audiojob-operator.tar", ref=_full_ref(image_name(root)))
    with build_lock(cache):
        buildkitd = _binary("buildkitd")
        buildctl = _binary("buildctl")
        version = (buildkitd.parent / ".buildkitd.version").read_text().strip()
        base = build_python_base(cache=cache)
        key = content_key(root=root, base=base, buildkit_version=version)
        key_file = archive.path.with_suffix(".key")
        if archive.path.exists() and key_file.exists() and key_file.read_text() == key:
            print(f"image {archive.ref} is up to date ({archive.path})")
            return archive
        require("runc", package="runc", why="BuildKit runs the Dockerfile's steps in runc")
        if os.geteuid() != 0:
            raise MissingToolError(
                "make image needs root: BuildKit's OCI worker mounts overlay filesystems and "
                "runs runc as root (rootless BuildKit is not set up here)"
            )
        t0 = time.monotonic()
        tmp = archive.path.with_suffix(".tar.tmp")
        with running_buildkitd(buildkitd=buildkitd, buildctl=buildctl, cache=cache) as address:
            _buildctl_build(
                buildctl, address=address, root=root, base=base, name=image_name(root), dest=tmp
            )
        tmp.rename(archive.path)
        archive.path.with_suffix(".tar.ref").write_text(archive.ref + "\n")
        key_file.write_text(key)
        size = archive.path.stat().st_size / 2**20
        print(f"image {archive.ref} built in {time.monotonic() - t0:.0f}s ({size:.0f} MiB archive)")
        return archive


@contextlib.contextmanager
def build_lock(cache: Path = CACHE) -> Iterator[None]:
    """One BuildKit at a time (its socket is fixed): a test run, `make demo` and `make release`
    may all ask for a build."""
    images = cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    with (images / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def archive_digest(archive: Path) -> str:
    """The manifest digest BuildKit wrote into the archive's OCI index (containerd keeps it)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{archive} has no index.json: not an archive from `make image`")
        return str(json.load(member)["manifests"][0]["digest"])


def _full_ref(name: str) -> str:
    return f"docker.io/library/{name}" if "/" not in name else name


def _binary(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise MissingToolError(f"{path} is missing: run `make binaries` (it builds BuildKit)")
    return path


def _buildctl_build(
    buildctl: Path, *, address: str, root: Path, base: PythonBase, name: str, dest: Path
) -> None:
    # Uncompressed: the archive is only imported on this machine, and gzip took ~70 s here.
    output = f"--output=type=docker,name={name},dest={dest},compression=uncompressed"
    buildctl_build(
        buildctl, address=address, root=root, base=base, output=output, version=chart_version(root)
    )


def buildctl_build(
    buildctl: Path,
    *,
    address: str,
    root: Path,
    base: PythonBase,
    output: str,
    version: str,
    metadata: Path | None = None,
) -> None:
    """The repo's Dockerfile built by BuildKit into `output` (a `--output=…` argument)."""
    args = [
        str(buildctl),
        f"--addr={address}",
        "build",
        "--frontend=dockerfile.v0",
        f"--local=context={root}",
        f"--local=dockerfile={root}",
        # The Dockerfile's `# syntax=docker/dockerfile:1` would pull that frontend from Docker
        # Hub; BuildKit's built-in frontend speaks the same syntax.
        "--opt=cmdline=dockerfile.v0",
        f"--opt=build-arg:PYTHON_IMAGE={base.name}",
        f"--opt=build-arg:AUDIOJOB_VERSION={version}",
        f"--oci-layout=pybase={base.layout}",
        f"--opt=context:{base.name}=oci-layout://pybase@{base.digest}",
        output,
        "--progress=plain",
    ]
    if metadata is not None:
        args.append(f"--metadata-file={metadata}")
    if HOST_CA_BUNDLE.exists():
        args.append(f"--secret=id=ca-certificates,src={HOST_CA_BUNDLE}")
    subprocess.run(args, check=True)


@contextlib.contextmanager
def running_buildkitd(*, buildkitd: Path, buildctl: Path, cache: Path) -> Iterator[str]:
    """A buildkitd with the OCI worker for the length of one build; its layer cache persists."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    address = f"unix://{RUN_DIR / 'buildkitd.sock'}"
    log_path = cache / "buildkit" / "buildkitd.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(buildkitd),
                f"--root={cache / 'buildkit' / 'root'}",
                f"--addr={address}",
                # Its default is /run/buildkit, which would outlive the build.
                f"--otel-socket-path={RUN_DIR / 'otel-grpc.sock'}",
                "--oci-worker=true",
                "--containerd-worker=false",
                # RUN steps use the host's network (apt and pip); nothing else is exposed.
                "--oci-worker-net=host",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(buildctl), f"--addr={address}", "debug", "workers"],
            capture_output=True,
            check=False,
        ).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text().strip().splitlines()[-5:]
                raise RuntimeError(f"buildkitd did not start ({log_path}): " + " | ".join(tail))
            time.sleep(0.3)
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        with contextlib.suppress(OSError):
            RUN_DIR.parent.rmdir()  # shared with the real node's containerd: only when empty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.image", description=__doc__)
    parser.parse_args(argv)
    try:
        archive = build_image()
    except RuntimeError as e:  # a missing tool, or buildkitd that would not start
        print(f"make image: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        what = f"{Path(e.cmd[0]).name} failed with exit code {e.returncode}"
        print(f"make image: {what} (its output is above)", file=sys.stderr)
        return 1
    print(f"{archive.path}\n{archive.ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
