"""The Dockerfile's shape and pins, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in instructions():
        if word == "FROM":
            current = result.setdefault(rest.split(" AS ")[1].strip(), [])
        if current is not None:
            current.append((word, rest))
    return result


def arg_default(name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert m, f"ARG {name} with a default"
    return m.group(1)


def test_two_stages_on_a_pinned_debian_python() -> None:
    assert list(stages()) == ["build", "runtime"]
    base = arg_default("PYTHON_IMAGE")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    for name, body in stages().items():
        assert body[0][1].startswith("${PYTHON_IMAGE} AS "), name


def test_runtime_has_debian_ffmpeg_and_the_pinned_ytdlp() -> None:
    runtime = " ".join(rest for _, rest in stages()["runtime"])
    assert "apt-get install -y --no-install-recommends ffmpeg" in runtime
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(p for p in pins if p.startswith("yt-dlp=="))
    assert arg_default("YT_DLP_VERSION") == pinned.removeprefix("yt-dlp==")
    assert '"yt-dlp==${YT_DLP_VERSION}"' in runtime


def test_project_is_installed_from_its_wheel_only() -> None:
    build = " ".join(rest for _, rest in stages()["build"])
    runtime = stages()["runtime"]
    assert "pip wheel --wheel-dir /wheels '.[s3]'" in build
    installs = [rest for word, rest in runtime if word == "RUN" and "pip install" in rest]
    assert len(installs) == 1 and "--no-index --find-links=/wheels" in installs[0]
    assert not [rest for word, rest in runtime if word in ("COPY", "ADD")]  # no source in runtime


def test_only_the_build_stage_may_see_a_proxy_ca() -> None:
    # pip in the build stage may need a TLS-intercepting proxy's CA; the image must never keep it.
    build = " ".join(rest for _, rest in stages()["build"])
    runtime = " ".join(rest for _, rest in stages()["runtime"])
    assert "--mount=type=secret,id=ca-certificates" in build
    assert "PIP_CERT=/run/secrets/ca-certificates" in build
    assert "secret" not in runtime and "PIP_CERT" not in runtime


def test_runs_as_non_root_with_a_writable_tmp_only() -> None:
    runtime = stages()["runtime"]
    user = [rest for word, rest in runtime if word == "USER"]
    assert user == ["10001:10001"]
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "TMPDIR=/tmp"):
        assert setting in env
    assert runtime[-1] == ("CMD", '["audiojob-controller"]')


def test_entry_points_the_image_relies_on_exist() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["audiojob-runner"] == "runner.__main__:main"
    assert scripts["audiojob-controller"] == "controller.__main__:main"


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().split("\n")
    assert "*" in lines
    copied = {src for word, rest in instructions() if word == "COPY" for src in rest.split()[:-1]}
    for path in copied:
        assert f"!{path.rstrip('/')}/" in lines or f"!{path}" in lines, path


def test_build_command_is_documented() -> None:
    assert "docker build -t audiojob-operator:" in (REPO / "docs" / "runner.md").read_text()
