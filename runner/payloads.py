"""Typed payloads, one model per job type, shared by the store (validation at claim time)
and the runner (validation before any work). Both also apply the rules of `runner/rules.py`
(addresses a job may fetch from, input paths), so a row gets one verdict and one sentence.

The edit list is a small, ordered list of operations applied to the input audio. Its JSON
Schema is published at `runner/edits.schema.json` (regenerate with
`python -m runner.payloads > runner/edits.schema.json`; a test keeps them equal).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from runner.errors import PayloadError
from runner.rules import NetworkRules, path_refusal, url_refusal

JobType = Literal["ingest", "preview", "save"]
JOB_TYPES: tuple[JobType, ...] = ("ingest", "preview", "save")

AudioFormat = Literal["mp3", "wav", "flac", "ogg", "opus", "m4a"]
MAX_URL_LENGTH = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trim(_Strict):
    """Keep only [start, end) of the input, in seconds."""

    op: Literal["trim"]
    start: float = Field(0.0, ge=0, description="seconds from the beginning")
    end: float | None = Field(
        None, gt=0, description="seconds from the beginning; None = to the end"
    )

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: float | None, info: Any) -> float | None:
        start = info.data.get("start", 0.0)
        if end is not None and end <= start:
            raise ValueError(f"trim end ({end}) must be after trim start ({start})")
        return end


class FadeIn(_Strict):
    op: Literal["fade_in"]
    duration: float = Field(gt=0, le=600, description="seconds")


class FadeOut(_Strict):
    op: Literal["fade_out"]
    duration: float = Field(gt=0, le=600, description="seconds")


class Gain(_Strict):
    op: Literal["gain"]
    db: float = Field(ge=-60, le=30, description="decibels; negative is quieter")


class Speed(_Strict):
    """Tempo change without pitch change (ffmpeg atempo, chained past its 0.5-2.0 range)."""

    op: Literal["speed"]
    factor: float = Field(ge=0.25, le=4.0)


Edit = Annotated[Trim | FadeIn | FadeOut | Gain | Speed, Field(discriminator="op")]
EditList = Annotated[list[Edit], Field(max_length=64)]


class IngestPayload(_Strict):
    """Fetch the best audio from a URL, normalise it and store it."""

    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    format: AudioFormat = "mp3"
    sample_rate: int = Field(44_100, ge=8_000, le=192_000, description="Hz")
    normalize_loudness: bool = False
    output_name: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url[:80]!r}")
        return url


class _RenderPayload(_Strict):
    input: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="a path under the output location, or s3://bucket/key",
    )
    edits: EditList = Field(default_factory=list)
    output_name: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")


class PreviewPayload(_RenderPayload):
    """A short, low-bitrate rendering of the edit list, for listening in the browser."""

    format: AudioFormat = "mp3"
    max_duration: float = Field(30.0, gt=0, le=300, description="seconds of preview")
    bitrate_kbps: int = Field(64, ge=16, le=192)


class SavePayload(_RenderPayload):
    """The full rendering of the edit list in the requested format."""

    format: AudioFormat = "mp3"
    sample_rate: int = Field(44_100, ge=8_000, le=192_000, description="Hz")
    bitrate_kbps: int | None = Field(None, ge=16, le=512)


Payload = IngestPayload | PreviewPayload | SavePayload
PAYLOAD_MODELS: dict[str, type[IngestPayload] | type[PreviewPayload] | type[SavePayload]] = {
    "ingest": IngestPayload,
    "preview": PreviewPayload,
    "save": SavePayload,
}


def _describe(error: ValidationError) -> str:
    parts = []
    for e in error.errors()[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "payload"
        parts.append(f"{where}: {e['msg']}")
    more = f" (and {error.error_count() - 5} more)" if error.error_count() > 5 else ""
    return "; ".join(parts) + more


def parse_payload(job_type: str, raw: str | None, *, rules: NetworkRules | None = None) -> Payload:
    """Validate a row's type and payload text, or raise PayloadError with a clear sentence.

    `rules` are the address rules in force (default: nothing allowed beyond the public
    internet); literal addresses they refuse fail here, names are left to the runner."""
    model = PAYLOAD_MODELS.get(job_type)
    if model is None:
        shown = job_type if len(job_type) <= 40 else job_type[:40] + "…"
        raise PayloadError(f"unknown job type {shown!r}: expected one of {', '.join(JOB_TYPES)}")
    if raw is None or raw.strip() == "":
        raw = "{}"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise PayloadError(
            f"payload is not valid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise PayloadError("payload is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(data).__name__}")
    try:
        payload = model.model_validate(data)
    except ValidationError as e:
        raise PayloadError(f"invalid {job_type} payload: {_describe(e)}") from None
    if isinstance(payload, IngestPayload):
        problem = url_refusal(payload.url, rules or NetworkRules())
    else:
        problem = path_refusal(payload.input)
    if problem is not None:
        raise PayloadError(problem)
    return payload


def edits_json_schema() -> dict[str, Any]:
    schema = TypeAdapter(EditList).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "audiojob edit list"
    return schema


if __name__ == "__main__":
    print(json.dumps(edits_json_schema(), indent=2, sort_keys=True))
