"""`audiojob-controller` / `python -m controller`: run the operator."""

from __future__ import annotations

import asyncio
import sys

import kopf

from controller import (
    handlers,  # noqa: F401  # registers the kopf handlers
    logs,
)
from controller.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"audiojob-controller: {e}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)
    # One replica (kopf's peering would freeze two at equal priority), so no peering objects.
    asyncio.run(
        kopf.operator(standalone=True, namespaces=[settings.kube.namespace], clusterwide=False)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
