"""`make release` refusing what it must refuse, with one sentence and nothing tagged: a VERSION
that is not semver or not the chart's, a chart whose appVersion disagrees, a registry that is
not there, one that refuses the image (read-only), and one that takes the image but refuses
the chart. The whole release on the real node is tests/realnode/test_release.py."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from devcluster.controlplane import bin_dir
from devcluster.image import chart_version
from devcluster.registry import Registry, running_registry
from devcluster.release import Release, ReleaseError, check, run

REPO = Path(__file__).resolve().parents[2]
VERSION = chart_version(REPO)


def tree_with_chart_versions(tmp: Path, version: str, app_version: str) -> Path:
    """A copy of what a release reads (the chart and the build context) with other versions."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        src = REPO / name
        if src.is_file() and not name.startswith(("tests/", "bench/", "docs/", "examples/")):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / name)
    chart = tmp / "charts/audiojob-operator/Chart.yaml"
    text = chart.read_text().replace(f"version: {VERSION}", f"version: {version}", 1)
    chart.write_text(text.replace(f'appVersion: "{VERSION}"', f'appVersion: "{app_version}"'))
    return tmp


@pytest.mark.parametrize(
    ("version", "said"),
    [
        ("1.2", "is not a semantic version"),
        ("v1.2.3", "is not a semantic version"),
        ("1.2.3; rm -rf /", "is not a semantic version"),
        ("99.0.0", f"is not the chart's version {VERSION}"),
    ],
)
def test_a_wrong_version_is_refused_before_anything_is_built(version: str, said: str) -> None:
    with pytest.raises(ReleaseError, match=said) as e:
        check(Release(version, "127.0.0.1:1", plain_http=True, root=REPO))
    assert "\n" not in str(e.value)


def test_an_app_version_that_disagrees_is_refused(tmp_path: Path) -> None:
    root = tree_with_chart_versions(tmp_path, "2.0.0", "1.9.0")
    with pytest.raises(ReleaseError, match=r"appVersion 1\.9\.0 differs from its version 2\.0\.0"):
        check(Release("2.0.0", "127.0.0.1:1", plain_http=True, root=root))


@pytest.mark.parametrize("registry", ["http://ghcr.io/acme", "ghcr.io/Acme", "a b"])
def test_a_registry_that_is_not_an_address_is_refused(registry: str) -> None:
    with pytest.raises(ReleaseError, match="is not a registry address"):
        check(Release(VERSION, registry, root=REPO))


def test_a_registry_that_is_not_there_is_refused(tmp_path: Path) -> None:
    with running_registry(tmp_path) as gone:
        host = gone.host
    with pytest.raises(ReleaseError, match=f"cannot reach the registry at http://{host}/v2/"):
        check(Release(VERSION, host, plain_http=True, root=REPO))


def test_the_make_target_says_one_sentence() -> None:
    done = subprocess.run(
        ["make", "-s", "release", "VERSION=1.2", "REGISTRY=127.0.0.1:1"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if line.startswith("make release:")]
    assert said == [
        "make release: VERSION '1.2' is not a semantic version (x.y.z, e.g. 0.2.0 or "
        "1.0.0-rc.1): Helm and the image tag both need one"
    ], done.stderr


@pytest.mark.realnode  # BuildKit (root, runc) like tests/image/test_image.py
def test_a_read_only_registry_refuses_the_image_and_nothing_is_tagged(tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry", read_only=True) as registry:
        with pytest.raises(ReleaseError, match="could not build or push the image") as e:
            run(Release(VERSION, registry.host, plain_http=True, root=REPO))
        assert "nothing was tagged" in str(e.value)
        assert_nothing_released(registry)


@pytest.mark.realnode
def test_a_refused_chart_leaves_the_image_untagged(tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry") as registry, refusing_charts(registry) as host:
        with pytest.raises(ReleaseError, match="the registry refused the chart") as e:
            run(Release(VERSION, host, plain_http=True, root=REPO))
        assert "no version of this release is tagged" in str(e.value)
        # The image did arrive, by digest: the refusal came after it, and no tag names it.
        pushed = [p for m, p, s in registry.requests() if m == "PUT" and "/manifests/" in p]
        assert pushed and all("/manifests/sha256:" in p for p in pushed), pushed
        assert_nothing_released(registry)


def assert_nothing_released(registry: Registry) -> None:
    assert registry.tags("audiojob-operator") == []
    assert registry.tags("charts/audiojob-operator") == []


@contextlib.contextmanager
def refusing_charts(registry: Registry) -> Iterator[str]:
    """A proxy in front of `registry` that answers every write under charts/ with the
    registry's own DENIED error, as a registry whose token lacks push rights there does."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method in ("POST", "PUT", "PATCH") and request.path.startswith("/v2/charts/"):
            body = {"errors": [{"code": "DENIED", "message": "requested access is denied"}]}
            return web.json_response(body, status=403)
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                f"{registry.url}{request.path_qs}",
                headers=dict(request.headers),  # its Host too: upload URLs point back here
                data=await request.read(),
                allow_redirects=False,
            ) as upstream,
        ):
            headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("transfer-encoding", "content-length", "connection")
            }
            return web.Response(status=upstream.status, headers=headers, body=await upstream.read())

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(web.Application(client_max_size=2**31))  # image layers
    app = runner.app
    app.router.add_route("*", "/{tail:.*}", handle)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def test_the_release_workflow_passes_actionlint() -> None:
    """The workflow cannot run here (it pushes to GitHub's registry on a tag); actionlint
    checks its syntax, expressions and action inputs."""
    workflow = REPO / ".github" / "workflows" / "release.yml"
    done = subprocess.run(
        [str(bin_dir() / "actionlint"), "-no-color", str(workflow)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = workflow.read_text()
    # The same order and the same chart packaging as make release.
    assert text.index("push-by-digest=true") < text.index("--package-chart")
    assert text.index("helm push") < text.index("imagetools create")
