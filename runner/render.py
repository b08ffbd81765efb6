"""preview and save: render an input through the edit list with ffmpeg."""

from __future__ import annotations

from typing import Any

from runner import ffmpeg
from runner.edits import build_filters
from runner.formats import ENCODINGS, codec_args, supported_rate
from runner.job import Workspace
from runner.outputs import S3Location
from runner.payloads import PreviewPayload, SavePayload
from runner.results import check_output, store_with_metadata

PREVIEW_SAMPLE_RATE = 44_100  # browsers play it everywhere; previews are small by bitrate instead
PREVIEW_CHANNELS = 2


def run_render(payload: PreviewPayload | SavePayload, ws: Workspace) -> dict[str, Any]:
    preview = isinstance(payload, PreviewPayload)
    ws.progress.stage("fetching", 0, 5)
    source = ws.location.fetch(payload.input, ws.scratch)
    label = f"input {payload.input[:200]!r}"
    duration = ffmpeg.require_audio(ffmpeg.probe(source, label=label), label=label)

    plan = build_filters(
        payload.edits,
        input_seconds=duration,
        limit_seconds=payload.max_duration if isinstance(payload, PreviewPayload) else None,
    )
    encoding = ENCODINGS[payload.format]
    if isinstance(payload, PreviewPayload):
        rate = supported_rate(encoding, PREVIEW_SAMPLE_RATE)
        codec = [
            *codec_args(encoding, sample_rate=rate, bitrate_kbps=payload.bitrate_kbps),
            "-ac", str(PREVIEW_CHANNELS),
        ]  # fmt: skip
    else:
        rate = supported_rate(encoding, payload.sample_rate)
        codec = codec_args(encoding, sample_rate=rate, bitrate_kbps=payload.bitrate_kbps)
    out = ws.scratch / f"render.{encoding.extension}"

    ws.progress.stage("rendering", 5, 95)
    ffmpeg.transcode(
        [
            "-i",
            str(source),
            "-map",
            "0:a:0",
            "-vn",
            "-af",
            plan.graph,
            "-map_metadata",
            "-1",
            *codec,
            str(out),
        ],
        expected_seconds=plan.duration,
        on_progress=ws.progress.update,
        log_path=ws.scratch / "ffmpeg.log",
        label=f"render {label} with {len(payload.edits)} edits to {payload.format}",
    )
    checked = check_output(out, encoding, label=f"the rendered {payload.format}")

    ws.progress.stage("uploading" if isinstance(ws.location, S3Location) else "storing", 95, 100)
    key = ws.output_key(payload.output_name, ".preview" if preview else "", encoding.extension)
    result: dict[str, Any] = {
        "duration": round(checked.duration or 0.0, 3),
        "expected_duration": round(plan.duration, 3),
        "codec": checked.audio_codec,
        "format": payload.format,
        "sample_rate": checked.sample_rate,
        "channels": checked.channels,
        "size": checked.size,
        "input": payload.input,
        "edits": len(payload.edits),
        "preview": preview,
    }
    return store_with_metadata(ws, out, key, encoding.content_type, result)
