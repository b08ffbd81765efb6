"""The generated references match their sources: docs/configuration.md (from the settings'
docstrings) and the chart's README (helm-docs, from values.yaml). `make docs` fixes both."""

from __future__ import annotations

import subprocess

import yaml

from controller import settings_doc
from controller.settings import Settings
from devcluster.controlplane import binary
from tests.chart.test_chart import CHART
from tests.docs.sentences import ROOT

STALE = "is stale: run `make docs` and commit the result"


def test_configuration_reference_is_current() -> None:
    path = ROOT / "docs" / "configuration.md"
    assert path.read_text() == settings_doc.render(), f"{path.relative_to(ROOT)} {STALE}"


def test_chart_readme_is_current() -> None:
    proc = subprocess.run(
        [str(binary("helm-docs")), "--chart-search-root", str(ROOT / "charts"),
         "--sort-values-order", "file", "--skip-version-footer", "--dry-run"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    readme = CHART / "README.md"
    assert readme.read_text() == proc.stdout, f"{readme.relative_to(ROOT)} {STALE}"


def test_every_setting_is_described() -> None:
    fields = [
        (f"{section}.{name}", info)
        for section, top in Settings.model_fields.items()
        for name, info in getattr(top.annotation, "model_fields", {section: top}).items()
    ]
    bare = [name for name, info in fields if not (info.description or "").strip()]
    assert not bare, f"settings without a docstring (docs/configuration.md needs one): {bare}"


def test_every_env_var_of_the_chart_is_in_the_reference() -> None:
    """The reference's chart column and the chart's controller Deployment agree both ways."""
    rendered = subprocess.run(
        [str(binary("helm")), "template", "x", str(CHART),
         "--set=database.url=libsql://example-org.turso.io", "--set=installationId=a",
         "--set=outputVolume.create=true", "--set=retention.finishedDays=1",
         "--set=runner.allowedNetworks={10.0.0.0/8}", "--set=runner.clusterNetworks={10.96.0.0/12}",
         "--set=runner.nodeSelector.a=b", "--set=runner.tolerations[0].operator=Exists",
         "--set=runner.affinity.nodeAffinity.x=y"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    deploy = next(
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-controller")
    )
    env = {e["name"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    documented = set(settings_doc.CHART_VALUES)
    assert env - documented == set(), "set by the chart, no chart value in the reference"
    assert documented - env == set(), "a chart value in the reference the chart does not set"
