"""The contract between the controller and the runner (docs/runner.md, docs/architecture.md).

Both sides import these names, so a key or exit code is spelled in exactly one place.

The termination message's models live in `runner.messages`: this module imports no pydantic,
so the runner can start its first ffprobe before it pays for pydantic's import
(bench/bench_runner.py, "the runner's fixed cost").
"""

from __future__ import annotations

from typing import Literal

PREFIX = "audiojob.dev"

# Labels on every Job and pod the controller creates.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_NAME_VALUE = "audiojob-runner"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MANAGED_BY_VALUE = "audiojob-operator"
LABEL_TYPE = f"{PREFIX}/type"
LABEL_ATTEMPT = f"{PREFIX}/attempt"
LABEL_JOB_KEY = f"{PREFIX}/job-key"

# Annotations set by the controller.
ANN_JOB_ID = f"{PREFIX}/job-id"
ANN_TRACE_ID = f"{PREFIX}/trace-id"

# Annotations the runner patches on its own pod, at most every 2 s.
ANN_STAGE = f"{PREFIX}/stage"
ANN_PROGRESS = f"{PREFIX}/progress"
ANN_HEARTBEAT = f"{PREFIX}/heartbeat"
PROGRESS_ANNOTATIONS = (ANN_STAGE, ANN_PROGRESS, ANN_HEARTBEAT)
MANAGED_ANNOTATIONS = frozenset({ANN_JOB_ID, ANN_TRACE_ID, *PROGRESS_ANNOTATIONS})
"""Pod annotations only the controller and the runner write: what ties a pod to its row."""


def _key(key: str) -> str:
    return key.replace(".", "\\.")  # kubectl's field paths escape the dots inside a key


# `kubectl get pods -o custom-columns=…`: what each runner pod does (docs/operations.md, the demo).
POD_COLUMNS = ",".join(
    (
        "POD:.metadata.name",
        f"JOB:.metadata.labels.{_key(LABEL_JOB_KEY)}",
        f"TYPE:.metadata.labels.{_key(LABEL_TYPE)}",
        f"TRY:.metadata.labels.{_key(LABEL_ATTEMPT)}",
        "PHASE:.status.phase",
        f"STAGE:.metadata.annotations.{_key(ANN_STAGE)}",
        f"PROGRESS:.metadata.annotations.{_key(ANN_PROGRESS)}",
    )
)

# Runner environment.
ENV_ID = "AUDIOJOB_ID"
ENV_TYPE = "AUDIOJOB_TYPE"
ENV_ATTEMPT = "AUDIOJOB_ATTEMPT"
ENV_TRACE_ID = "AUDIOJOB_TRACE_ID"
ENV_PAYLOAD = "AUDIOJOB_PAYLOAD"
ENV_OUTPUT = "AUDIOJOB_OUTPUT"
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"

# Exit codes (sysexits.h where one fits).
EXIT_OK = 0
EXIT_PERMANENT = 65  # EX_DATAERR: bad input, retrying cannot help
EXIT_TRANSIENT = 75  # EX_TEMPFAIL: try again later
EXIT_TERMINATED = 143  # 128 + SIGTERM

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096  # bytes; the kubelet truncates anything longer

ErrorKind = Literal["transient", "permanent"]
