"""`make image`'s content key: what the build context sends changes it, nothing else does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devcluster.image import content_key, context_files
from devcluster.pybase import PythonBase

REPO = Path(__file__).resolve().parents[2]
CHART_YAML = "charts/audiojob-operator/Chart.yaml"  # the version the image is built with


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", CHART_YAML):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, tmp_path / name)
    files = {
        "README.md": "# readme",
        "controller/engine.py": "x = 1",
        "controller/__pycache__/engine.cpython-311.pyc": "bytecode",
        "runner/ingest.py": "y = 2",
        "tests/test_engine.py": "def test_engine() -> None: ...",
        "devcluster/demo.py": "z = 3",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def key(root: Path, digest: str = "sha256:aa", buildkit: str = "v0.34.2") -> str:
    base = PythonBase(layout=root, digest=digest)
    return content_key(root=root, base=base, buildkit_version=buildkit)


def test_the_context_is_what_dockerignore_allows(tree: Path) -> None:
    sent = {str(f.relative_to(tree)) for f in context_files(tree)}
    assert sent == {"pyproject.toml", "README.md", "controller/engine.py", "runner/ingest.py"}


@pytest.mark.parametrize(
    "path",
    ["tests/test_engine.py", "devcluster/demo.py", "controller/__pycache__/engine.cpython-311.pyc"],
)
def test_files_outside_the_context_leave_the_key(tree: Path, path: str) -> None:
    before = key(tree)
    (tree / path).write_text("changed")
    assert key(tree) == before


@pytest.mark.parametrize(
    "path", ["controller/engine.py", "runner/ingest.py", "Dockerfile", "README.md"]
)
def test_what_the_build_reads_changes_the_key(tree: Path, path: str) -> None:
    before = key(tree)
    (tree / path).write_text((tree / path).read_text() + "\n# changed")
    assert key(tree) != before


def test_the_version_changes_the_key(tree: Path) -> None:
    """The chart's version goes in as the AUDIOJOB_VERSION build argument."""
    before = key(tree)
    chart = tree / CHART_YAML
    chart.write_text(chart.read_text().replace("\nversion: ", "\nversion: 9", 1))
    assert key(tree) != before


def test_a_new_source_file_changes_the_key(tree: Path) -> None:
    before = key(tree)
    (tree / "runner" / "new.py").write_text("")
    assert key(tree) != before


def test_base_and_buildkit_change_the_key(tree: Path) -> None:
    assert len({key(tree), key(tree, digest="sha256:bb"), key(tree, buildkit="v0.35.0")}) == 3


def test_a_dockerignore_that_is_not_an_allow_list_is_refused(tree: Path) -> None:
    (tree / ".dockerignore").write_text("tests/\n")
    with pytest.raises(ValueError, match=r"must start with `\*`"):
        context_files(tree)
