"""The audiojob operator: turns rows of a libSQL job table into Kubernetes Jobs."""

import os
import re
from pathlib import Path


def _version() -> str:
    """The release version. It has one home, the chart's Chart.yaml; the image carries it as
    AUDIOJOB_VERSION (a build argument of the Dockerfile), and a checkout reads the chart."""
    if stamped := os.environ.get("AUDIOJOB_VERSION"):
        return stamped
    chart = Path(__file__).resolve().parent.parent / "charts" / "audiojob-operator" / "Chart.yaml"
    try:
        found = re.search(r"^version:\s*\"?([^\"\s]+)", chart.read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found[1] if found else "0.0.0-dev"


__version__ = _version()
