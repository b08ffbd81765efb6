"""`make release VERSION=x.y.z REGISTRY=host[:port][/path]`: the image and the chart, pushed to
an OCI registry.

The version has one home, `charts/audiojob-operator/Chart.yaml`'s `version` (its `appVersion`
must equal it), and VERSION must name it, so a release is always the tree it was cut from. The
image gets it as the Dockerfile's AUDIOJOB_VERSION build argument, which is the version the
controller reports (`audiojob_build_info`, its worker row, its User-Agent).

Order, so that nothing half-pushed is ever tagged as released:

1. the image is pushed by digest only (BuildKit's `push-by-digest`): no tag yet;
2. the chart is packaged with that digest and the registry's repository as its default image,
   and pushed: from here on `helm install oci://…/charts/audiojob-operator --version x.y.z` works,
   and it pulls exactly the image built in step 1, whatever happens to tags later;
3. the image gets its `x.y.z` tag (the same build pushed once more, now by name; BuildKit's
   cache makes it the same manifest, and a different digest is an error).

A failure in 1 or 2 leaves no tag and no chart version; one in 3 leaves a working release
whose image is reachable by digest, and says so.

    python -m devcluster.release --version 0.2.0 --registry 127.0.0.1:5000 --plain-http
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devcluster.controlplane import CACHE, bin_dir
from devcluster.image import ROOT, _binary, build_lock, buildctl_build, running_buildkitd
from devcluster.pybase import MissingToolError, build_python_base, require

CHART = Path("charts/audiojob-operator")
IMAGE_REPOSITORY = "audiojob-operator"
CHART_REPOSITORY = "charts"
# semver.org's own expression (2.0.0), without the leading "v" Helm would also accept: chart
# versions and image tags are then the same string.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# host[:port] then optional /path segments, as image references allow them.
REGISTRY = re.compile(r"^[a-zA-Z0-9.-]+(?::\d{1,5})?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


class ReleaseError(Exception):
    """A release that cannot go on; the message is one sentence for the person releasing."""


@dataclass(frozen=True)
class Release:
    version: str
    registry: str
    plain_http: bool = False
    root: Path = ROOT

    @property
    def image_repository(self) -> str:
        return f"{self.registry}/{IMAGE_REPOSITORY}"

    @property
    def chart_ref(self) -> str:
        return f"oci://{self.registry}/{CHART_REPOSITORY}/audiojob-operator"


def versions(root: Path) -> dict[str, str]:
    """Where the version is written: the chart's version and its appVersion."""
    chart = (root / CHART / "Chart.yaml").read_text()

    def field(name: str) -> str:
        m = re.search(rf"^{name}:\s*\"?([^\"\s]+)\"?\s*$", chart, re.MULTILINE)
        return m[1] if m else ""

    return {"version": field("version"), "appVersion": field("appVersion")}


def check(release: Release) -> None:
    """Everything that can be refused before anything is built or pushed."""
    v = release.version
    if not SEMVER.match(v):
        raise ReleaseError(
            f"VERSION {v!r} is not a semantic version (x.y.z, e.g. 0.2.0 or 1.0.0-rc.1): "
            "Helm and the image tag both need one"
        )
    found = versions(release.root)
    chart = found["version"]
    if v != chart:
        raise ReleaseError(
            f"VERSION {v} is not the chart's version {chart}: set `version` in "
            f"{CHART}/Chart.yaml (and its appVersion) to {v} and "
            "commit it, so the release is the tree it was cut from"
        )
    if found["appVersion"] != chart:
        raise ReleaseError(
            f"{CHART}/Chart.yaml's appVersion {found['appVersion'] or '(missing)'} differs "
            f"from its version {chart}: the image is tagged with the version, so make them equal"
        )
    if not REGISTRY.match(release.registry):
        raise ReleaseError(
            f"REGISTRY {release.registry!r} is not a registry address: give host[:port][/path], "
            "e.g. ghcr.io/acme or 127.0.0.1:5000, without a scheme"
        )
    probe_registry(release)


def probe_registry(release: Release) -> None:
    """The registry answers the distribution API's base endpoint (401 is fine: the push
    authenticates with the credentials of `docker login` / `helm registry login`)."""
    host = release.registry.split("/", 1)[0]
    url = f"{'http' if release.plain_http else 'https'}://{host}/v2/"
    try:
        urllib.request.urlopen(url, timeout=15).close()
    except urllib.error.HTTPError as e:
        if e.code != 401:
            raise ReleaseError(f"the registry at {host} answered {e.code} on {url}") from e
    except (OSError, urllib.error.URLError) as e:
        hint = "" if release.plain_http else " (a plain-HTTP registry needs PLAIN_HTTP=1)"
        raise ReleaseError(f"cannot reach the registry at {url}: {e}{hint}") from e


def push_image(release: Release, *, by_digest: bool) -> str:
    """Build the Dockerfile and push it; returns the manifest digest."""
    base = build_python_base(cache=CACHE)
    require("runc", package="runc", why="BuildKit runs the Dockerfile's steps in runc")
    name = release.image_repository
    attrs = ["type=image", "push=true", "compression=gzip"]
    attrs.append(f"name={name}" if by_digest else f"name={name}:{release.version}")
    if by_digest:
        attrs.append("push-by-digest=true")
    if release.plain_http:
        attrs.append("registry.insecure=true")
    with tempfile.TemporaryDirectory(prefix="audiojob-release-") as tmp:
        metadata = Path(tmp) / "metadata.json"
        with (
            build_lock(),
            running_buildkitd(
                buildkitd=_binary("buildkitd"), buildctl=_binary("buildctl"), cache=CACHE
            ) as address,
        ):
            try:
                buildctl_build(
                    _binary("buildctl"),
                    address=address,
                    root=release.root,
                    base=base,
                    output="--output=" + ",".join(attrs),
                    version=release.version,
                    metadata=metadata,
                )
            except subprocess.CalledProcessError as e:
                raise ReleaseError(
                    f"BuildKit could not build or push the image to {name} (exit "
                    f"{e.returncode}; its output is above): nothing was tagged"
                ) from e
        return str(json.loads(metadata.read_text())["containerimage.digest"])


def package_chart(release: Release, digest: str, dest: Path) -> Path:
    """The chart as released: its default image is this release's, pinned by digest."""
    work = dest / "chart"
    shutil.copytree(release.root / CHART, work)
    values = work / "values.yaml"
    text = values.read_text()
    text, n_repo = re.subn(
        r"^(  repository:).*$", rf'\1 "{release.image_repository}"', text, count=1, flags=re.M
    )
    text, n_digest = re.subn(r"^(  digest:).*$", rf'\1 "{digest}"', text, count=1, flags=re.M)
    if (n_repo, n_digest) != (1, 1):
        raise ReleaseError(f"{CHART}/values.yaml has no `image.repository` / `image.digest` line")
    values.write_text(text)
    out = subprocess.run(
        [helm_binary(), "package", str(work), f"--destination={dest}",
         f"--version={release.version}", f"--app-version={release.version}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode:
        raise ReleaseError(f"helm package failed: {out.stderr.strip()}")
    return dest / f"audiojob-operator-{release.version}.tgz"


def helm_binary() -> str:
    """The helm build-binaries.sh built, else one on PATH (the release workflow's)."""
    built = bin_dir() / "helm"
    return str(built) if built.exists() else shutil.which("helm") or str(built)


def push_chart(release: Release, package: Path) -> None:
    args = [helm_binary(), "push", str(package)]
    args.append(f"oci://{release.registry}/{CHART_REPOSITORY}")
    if release.plain_http:
        args.append("--plain-http")
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode:
        raise ReleaseError(
            f"the registry refused the chart ({out.stderr.strip()}): the image was pushed by "
            "digest only, so no version of this release is tagged"
        )


def run(release: Release) -> str:
    """The whole release; returns the image digest."""
    check(release)
    print(f"==> image {release.image_repository} (by digest)", flush=True)
    digest = push_image(release, by_digest=True)
    with tempfile.TemporaryDirectory(prefix="audiojob-chart-") as tmp:
        package = package_chart(release, digest, Path(tmp))
        print(f"==> chart {release.chart_ref} {release.version}", flush=True)
        push_chart(release, package)
    print(f"==> tag {release.image_repository}:{release.version}", flush=True)
    try:
        tagged = push_image(release, by_digest=False)
    except ReleaseError as e:
        raise ReleaseError(
            f"the chart {release.version} is released and pulls the image by digest "
            f"({digest}), but tagging the image failed: {e}"
        ) from e
    if tagged != digest:
        raise ReleaseError(
            f"the tagged build's digest {tagged} differs from the released {digest}: the "
            "build is not reproducible from BuildKit's cache; the chart pulls the released one"
        )
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.release",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", required=True, help="x.y.z, the chart's version")
    parser.add_argument("--registry", required=True, help="host[:port][/path]")
    parser.add_argument("--plain-http", action="store_true", help="the registry speaks HTTP")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--check-only", action="store_true",
                        help="check VERSION and the registry, push nothing")  # fmt: skip
    parser.add_argument("--package-chart", metavar="DIGEST",
                        help="only package the chart for an image pushed by DIGEST (the "
                        "release workflow builds the image with docker's own actions)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("dist"), help="where --package-chart "
                        "writes the .tgz")  # fmt: skip
    a = parser.parse_args(argv)
    release = Release(a.version, a.registry.rstrip("/"), a.plain_http, a.root)
    try:
        if a.check_only:
            check(release)
            print(f"release {release.version} to {release.registry}: checks pass")
            return 0
        if a.package_chart:
            if not re.fullmatch(r"sha256:[a-f0-9]{64}", a.package_chart):
                raise ReleaseError(f"--package-chart {a.package_chart!r} is not an image digest")
            a.out.mkdir(parents=True, exist_ok=True)
            print(package_chart(release, a.package_chart, a.out.resolve()))
            return 0
        digest = run(release)
    except (ReleaseError, MissingToolError) as e:
        print(f"make release: {e}", file=sys.stderr)
        return 2
    print(f"released {release.version}:\n  image {release.image_repository}:{release.version}"
          f"@{digest}\n  chart {release.chart_ref} --version {release.version}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
