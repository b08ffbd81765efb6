"""The termination message the runner leaves and the controller reads (docs/runner.md):
`{"ok": true, "result": {...}}` or `{"ok": false, "error", "kind"}`."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.contract import TERMINATION_MESSAGE_LIMIT, ErrorKind


class SuccessMessage(BaseModel):
    """`{"ok": true, "result": {...}}` in the termination message."""

    model_config = ConfigDict(extra="ignore")
    ok: Literal[True]
    result: dict[str, Any] = Field(default_factory=dict)


class FailureMessage(BaseModel):
    """`{"ok": false, "error": "...", "kind": "transient|permanent"}` in the termination message."""

    model_config = ConfigDict(extra="ignore")
    ok: Literal[False]
    error: str
    kind: ErrorKind = "permanent"


TerminationMessage = SuccessMessage | FailureMessage


def encode_termination_message(message: TerminationMessage) -> bytes:
    """Serialise a message so it fits the kubelet's 4 KiB limit and stays valid JSON.

    Truncation shortens the error text (or drops the result's detail) rather than cutting
    the JSON in half, so the controller can always parse what the kubelet kept.
    """
    data = message.model_dump_json().encode()
    if len(data) <= TERMINATION_MESSAGE_LIMIT:
        return data
    if isinstance(message, FailureMessage):
        overflow = len(data) - TERMINATION_MESSAGE_LIMIT + len(" [truncated]") + 8
        text = message.error.encode()[: max(0, len(message.error.encode()) - overflow)]
        short = text.decode(errors="ignore") + " [truncated]"
        return encode_termination_message(message.model_copy(update={"error": short}))
    # A result too big for the channel is a runner bug; keep what the row needs.
    slim = {k: v for k, v in message.result.items() if isinstance(v, str | int | float | bool)}
    data = SuccessMessage(ok=True, result=slim).model_dump_json().encode()
    if len(data) <= TERMINATION_MESSAGE_LIMIT:
        return data
    return SuccessMessage(ok=True, result={"truncated": True}).model_dump_json().encode()


def parse_termination_message(text: str | None) -> TerminationMessage | None:
    """The runner's message, or None when the container left none or left garbage."""
    if not text:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    try:
        if raw.get("ok") is True:
            return SuccessMessage.model_validate(raw)
        return FailureMessage.model_validate(raw)
    except ValidationError:
        return None
