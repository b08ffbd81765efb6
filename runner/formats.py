"""How each output format is encoded, and what ffprobe must find in the result."""

from __future__ import annotations

from dataclasses import dataclass

from runner.payloads import AudioFormat


@dataclass(frozen=True)
class Encoding:
    muxer: str
    codec: str  # the encoder passed to -c:a
    probe_codec: str  # codec_name ffprobe reports for the result
    extension: str
    content_type: str
    lossy: bool
    # Sample rates the encoder accepts; None means any.
    sample_rates: tuple[int, ...] | None = None


ENCODINGS: dict[AudioFormat, Encoding] = {
    "mp3": Encoding("mp3", "libmp3lame", "mp3", "mp3", "audio/mpeg", lossy=True),
    "wav": Encoding("wav", "pcm_s16le", "pcm_s16le", "wav", "audio/wav", lossy=False),
    "flac": Encoding("flac", "flac", "flac", "flac", "audio/flac", lossy=False),
    "ogg": Encoding("ogg", "libvorbis", "vorbis", "ogg", "audio/ogg", lossy=True),
    "opus": Encoding(
        "opus",
        "libopus",
        "opus",
        "opus",
        "audio/ogg",
        lossy=True,
        sample_rates=(8_000, 12_000, 16_000, 24_000, 48_000),
    ),
    "m4a": Encoding("ipod", "aac", "aac", "m4a", "audio/mp4", lossy=True),
}


def supported_rate(encoding: Encoding, wanted: int) -> int:
    """The requested rate if the encoder takes it, else the nearest rate at or above it.

    Opus only runs at 8/12/16/24/48 kHz; asking for 44.1 kHz Opus gets 48 kHz rather than
    a failed job, and the result reports the rate actually used.
    """
    if encoding.sample_rates is None or wanted in encoding.sample_rates:
        return wanted
    above = [r for r in encoding.sample_rates if r >= wanted]
    return min(above) if above else max(encoding.sample_rates)


def codec_args(encoding: Encoding, *, sample_rate: int, bitrate_kbps: int | None) -> list[str]:
    args = ["-c:a", encoding.codec, "-ar", str(sample_rate)]
    if encoding.lossy:
        args += ["-b:a", f"{bitrate_kbps or 192}k"]
    if encoding.muxer == "ipod":
        # Index at the front so browsers can start playing before the whole file arrives.
        args += ["-movflags", "+faststart"]
    return [*args, "-f", encoding.muxer]
