"""A watch stream's lines (controller.watch.lines_of) from aiohttp's reader, however the bytes
were split into reads: an event across several reads, several events in one read."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp.base_protocol import BaseProtocol

from controller.watch import lines_of

EVENTS = [{"type": "ADDED", "object": {"n": i, "pad": "x" * (i * 700)}} for i in range(12)]
STREAM = b"".join(json.dumps(e).encode() + b"\n" for e in EVENTS) + b"\n"  # with a blank line


async def read(sizes: list[int], *, tail: bytes = b"") -> list[bytes]:
    reader = aiohttp.StreamReader(BaseProtocol(asyncio.get_running_loop()), 2**16)
    data, at, i = STREAM + tail, 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)]
        reader.feed_data(data[at : at + size])
        at, i = at + size, i + 1
    reader.feed_eof()
    return [line async for line in lines_of(reader)]


async def test_every_split_gives_the_same_events() -> None:
    for sizes in ([1], [7, 3000], [len(STREAM)], [4096], [100, 1, 50_000]):
        lines = await read(sizes)
        assert [json.loads(line) for line in lines] == EVENTS, sizes


async def test_a_last_line_without_its_newline_is_kept() -> None:
    lines = await read([333], tail=b'{"type": "DELETED", "object": {}}')
    assert json.loads(lines[-1]) == {"type": "DELETED", "object": {}}
    assert len(lines) == len(EVENTS) + 1
