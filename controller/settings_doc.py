"""`python -m controller.settings_doc [PATH]`: write docs/configuration.md from the settings.

Every field of `controller.settings.Settings` becomes one row: its environment variable, the
chart value that sets it, its default and its docstring. `make docs` runs this; a test fails
when the checked-in file differs from what this writes, so the reference cannot go stale.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from controller.queue_metrics import DEFAULT_PORT as QUEUE_METRICS_PORT
from controller.settings import Settings
from runner import job as runner_job
from runner import rules, signals

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
PREFIX = "AUDIOJOB_"

# Settings the chart sets, by environment variable -> chart value. A test renders the chart and
# requires this map and the controller Deployment's env to agree both ways.
CHART_VALUES: dict[str, str] = {
    "TURSO_DATABASE_URL": "`database.url` (or `database.existingSecret`)",
    "TURSO_AUTH_TOKEN": "`database.authToken` (or `database.existingSecret`)",
    "AUDIOJOB_DB__TABLE": "`database.table`",
    "AUDIOJOB_DB__STATEMENT_TIMEOUT_SECONDS": "`database.statementTimeoutSeconds`",
    "AUDIOJOB_INSTALLATION": "`installationId`",
    "AUDIOJOB_KUBE__NAMESPACE": "`jobsNamespace.name`",
    "AUDIOJOB_KUBE__WRITE_CONCURRENCY": "`controller.writeConcurrency`",
    "AUDIOJOB_RUNNER__IMAGE": "`runner.image` (default: `image.*`)",
    "AUDIOJOB_RUNNER__IMAGE_PULL_POLICY": "`image.pullPolicy`",
    "AUDIOJOB_RUNNER__SERVICE_ACCOUNT": "`runner.serviceAccount.name`",
    "AUDIOJOB_RUNNER__OUTPUT": "`runner.output`",
    "AUDIOJOB_RUNNER__OUTPUT_VOLUME_CLAIM": "`outputVolume.existingClaim` / `outputVolume.create`",
    "AUDIOJOB_RUNNER__RESOURCES": "`runner.resources`",
    "AUDIOJOB_RUNNER__NODE_SELECTOR": "`runner.nodeSelector`",
    "AUDIOJOB_RUNNER__TOLERATIONS": "`runner.tolerations`",
    "AUDIOJOB_RUNNER__AFFINITY": "`runner.affinity`",
    "AUDIOJOB_RUNNER__TTL_SECONDS_AFTER_FINISHED": "`runner.ttlSecondsAfterFinished`",
    "AUDIOJOB_RUNNER__ALLOWED_NETWORKS": "`runner.allowedNetworks`",
    "AUDIOJOB_RUNNER__CLUSTER_NETWORKS": "`runner.clusterNetworks`",
    "AUDIOJOB_TIMEOUTS__INGEST_SECONDS": "`timeouts.ingestSeconds`",
    "AUDIOJOB_TIMEOUTS__PREVIEW_SECONDS": "`timeouts.previewSeconds`",
    "AUDIOJOB_TIMEOUTS__SAVE_SECONDS": "`timeouts.saveSeconds`",
    "AUDIOJOB_TIMEOUTS__PENDING_SECONDS": "`timeouts.pendingSeconds`",
    "AUDIOJOB_TIMEOUTS__HEARTBEAT_STALE_SECONDS": "`timeouts.heartbeatStaleSeconds`",
    "AUDIOJOB_TIMEOUTS__PROGRESS_STALLED_SECONDS": "`timeouts.progressStalledSeconds`",
    "AUDIOJOB_TIMEOUTS__CANCEL_GRACE_SECONDS": "`timeouts.cancelGraceSeconds`",
    "AUDIOJOB_TIMEOUTS__RETRY_BACKOFF_SECONDS": "`timeouts.retryBackoffSeconds`",
    "AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS": "`claim.pollIntervalSeconds`",
    "AUDIOJOB_CLAIM__MAX_CONCURRENT": "`claim.maxConcurrent`",
    "AUDIOJOB_CLAIM__RECONCILE_INTERVAL_SECONDS": "`claim.reconcileIntervalSeconds`",
    "AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS": "`claim.heartbeatIntervalSeconds`",
    "AUDIOJOB_CLAIM__CANCEL_CHECK_INTERVAL_SECONDS": "`claim.cancelCheckIntervalSeconds`",
    "AUDIOJOB_CLAIM__WORKER_HEARTBEAT_SECONDS": "`claim.workerHeartbeatSeconds`",
    "AUDIOJOB_METRICS__PORT": "`controller.metricsPort`",
    "AUDIOJOB_METRICS__QUEUE_COUNT_CAP": "`queueMetrics.countCap`",
    "AUDIOJOB_OWNERSHIP__LEASE_SECONDS": "`ownership.leaseSeconds`",
    "AUDIOJOB_OWNERSHIP__RENEW_DEADLINE_SECONDS": "`ownership.renewDeadlineSeconds`",
    "AUDIOJOB_OWNERSHIP__RETRY_PERIOD_SECONDS": "`ownership.retryPeriodSeconds`",
    "AUDIOJOB_OWNERSHIP__OWNER_LEASE_SECONDS": "`ownership.ownerLeaseSeconds`",
    "AUDIOJOB_OWNERSHIP__TAKEOVER_INTERVAL_SECONDS": "`ownership.takeoverIntervalSeconds`",
    "AUDIOJOB_OWNERSHIP__TAKEOVER_MARGIN_SECONDS": "`ownership.takeoverMarginSeconds`",
    "AUDIOJOB_RETENTION__FINISHED_DAYS": "`retention.finishedDays`",
    "AUDIOJOB_RETENTION__BATCH_ROWS": "`retention.batchRows`",
    "AUDIOJOB_RETENTION__INTERVAL_SECONDS": "`retention.intervalSeconds`",
    "AUDIOJOB_LOG_LEVEL": "`controller.logLevel`",
}
# The original app's names, read outside the prefix; they win over AUDIOJOB_DB__*.
ALIASES = {"AUDIOJOB_DB__URL": "TURSO_DATABASE_URL", "AUDIOJOB_DB__AUTH_TOKEN": "TURSO_AUTH_TOKEN"}

# The runner's own variables: the controller sets them on each Job; a runner started by hand
# (outside a pod) reads them too.
RUNNER_ENV: list[tuple[str, str, str]] = [
    (
        runner_job.ENV_GRACE,
        f"{signals.DEFAULT_GRACE_SECONDS:g}",
        "Seconds between SIGTERM and SIGKILL for the runner's child processes; the controller "
        "sets it to the pod's `terminationGracePeriodSeconds`.",
    ),
    (
        runner_job.ENV_MAX_DOWNLOAD_BYTES,
        str(runner_job.DEFAULT_MAX_DOWNLOAD_BYTES),
        "A source larger than this fails the job permanently.",
    ),
    (
        runner_job.ENV_SOCKET_TIMEOUT,
        f"{runner_job.DEFAULT_SOCKET_TIMEOUT:g}",
        "Seconds without a byte before a download gives up (transient).",
    ),
    (
        runner_job.ENV_TERMINATION_LOG,
        "`/dev/termination-log`",
        "Where the result goes, for runs outside a pod.",
    ),
    (
        rules.ENV_ALLOWED_NETWORKS,
        "(empty)",
        "From `AUDIOJOB_RUNNER__ALLOWED_NETWORKS`.",
    ),
    (
        rules.ENV_CLUSTER_NETWORKS,
        "(empty)",
        "From `AUDIOJOB_RUNNER__CLUSTER_NETWORKS`.",
    ),
]

HEADER = f"""# Configuration

<!-- Generated by `make docs` (python -m controller.settings_doc) from controller/settings.py.
     Do not edit: change the docstrings there and regenerate. -->

The controller reads its settings from environment variables: the prefix `{PREFIX}`, then the
section and the field in capitals joined by a double underscore
(`AUDIOJOB_TIMEOUTS__INGEST_SECONDS=900`, `AUDIOJOB_METRICS__PORT=8080`); top-level fields have
no section (`AUDIOJOB_INSTALLATION`). Lists and maps are JSON
(`AUDIOJOB_RUNNER__NODE_SELECTOR='{{"pool": "audio"}}'`). The database URL and token also go by
the original app's names, `TURSO_DATABASE_URL` and `TURSO_AUTH_TOKEN`, which win when both are
set. `audiojob status` and queue-metrics read the same variables.

An invalid value stops start-up with one line and exit status 2, e.g.
`invalid setting AUDIOJOB_TIMEOUTS__INGEST_SECONDS: Input should be greater than 0`.

The Helm chart sets each of these from a value (the "chart value" column; the chart's own
reference is [charts/audiojob-operator/README.md](../charts/audiojob-operator/README.md)).
`controller.extraEnv` is left for what is not a setting, such as `HTTPS_PROXY`.
"""


def _one_line(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip().replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None:
        return "(unset)"
    if value == "":
        return "(empty)"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict | list):
        return f"`{json.dumps(value, default=_dump)}`"
    return f"`{value}`"


def _dump(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else str(value)


def _row(env: str, field: FieldInfo) -> str:
    names = f"`{env}`"
    if env in ALIASES:
        names = f"`{ALIASES[env]}` or {names}"
        chart = CHART_VALUES.get(ALIASES[env], "")
    else:
        chart = CHART_VALUES.get(env, "")
    return f"| {names} | {chart} | {_default(field)} | {_one_line(field.description)} |"


def _sections() -> Iterator[tuple[str, str, list[tuple[str, FieldInfo]]]]:
    top: list[tuple[str, FieldInfo]] = []
    nested: list[tuple[str, str, list[tuple[str, FieldInfo]]]] = []
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            rows = [
                (f"{PREFIX}{name.upper()}__{sub.upper()}", info)
                for sub, info in model.model_fields.items()
            ]
            nested.append((name, _one_line(model.__doc__), rows))
        else:
            top.append((f"{PREFIX}{name.upper()}", field))
    yield "general", "The installation as a whole.", top
    yield from nested


def render() -> str:
    out = [HEADER]
    for name, doc, rows in _sections():
        out += [f"## `{name}`", "", doc, ""] if doc else [f"## `{name}`", ""]
        out += ["| environment variable | chart value | default | description |"]
        out += ["|---|---|---|---|"]
        out += [_row(env, field) for env, field in rows]
        out.append("")
    out += [
        "## queue-metrics",
        "",
        "`python -m controller.queue_metrics` reads the `db` and `metrics.queue_count_cap` "
        "settings above, and:",
        "",
        "| environment variable | chart value | default | description |",
        "|---|---|---|---|",
        f"| `AUDIOJOB_QUEUE_METRICS_PORT` | `queueMetrics.port` | `{QUEUE_METRICS_PORT}` "
        "| Port of `/queue`, `/metrics` and `/healthz`. |",
        "",
        "## Runner pods",
        "",
        "The runner (`python -m runner`) is configured by the controller through the Job it "
        "builds; these are its own variables.",
        "",
        "| environment variable | default | description |",
        "|---|---|---|",
    ]
    out += [f"| `{env}` | {default} | {text} |" for env, default, text in RUNNER_ENV]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_PATH
    path.write_text(render())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
