"""Reading Wyoming events from a client with bounds, and the audio format of audio events.

The ``wyoming`` package's own reader trusts the lengths a client sends (a header announcing a
gigabyte payload is read into memory). A server facing many clients reads each event here
instead: a JSON header line, optional extra JSON data, optional payload, each within a limit.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import numpy as np
from wyoming.event import Event

MAX_HEADER_BYTES = 64 * 1024  # the reader's line limit (asyncio.start_server(limit=...))
MAX_DATA_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # 4 MiB: over 2 minutes of 16 kHz 16-bit mono in one chunk
WIDTHS = {1: np.dtype(np.uint8), 2: np.dtype("<i2"), 4: np.dtype("<i4")}


class ProtocolError(Exception):
    """The byte stream is not Wyoming events: the connection cannot go on."""


class Fault(Exception):
    """One event that cannot be served (bad field, wrong order): reported, the connection goes on."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.code = code


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, or None when the client closed the connection between events."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ProtocolError("connection closed inside an event header") from None
        return None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"event header longer than {MAX_HEADER_BYTES} bytes") from None
    try:
        header = json.loads(line)
    except ValueError:
        raise ProtocolError("event header is not a JSON object on one line") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("event header has no 'type'")
    data = header.get("data") or {}
    extra = await _read_part(reader, header, "data_length", MAX_DATA_BYTES)
    if extra:
        try:
            data = {**data, **json.loads(extra)} if isinstance(data, dict) else data
        except (ValueError, TypeError):
            raise ProtocolError("event data is not a JSON object") from None
    if not isinstance(data, dict):
        raise ProtocolError("event data is not a JSON object")
    payload = await _read_part(reader, header, "payload_length", MAX_PAYLOAD_BYTES)
    return Event(type=header["type"], data=data, payload=payload or None)


async def _read_part(reader: asyncio.StreamReader, header: dict, field: str, limit: int) -> bytes:
    length = header.get(field) or 0
    if not isinstance(length, int) or not 0 <= length <= limit:
        raise ProtocolError(f"{field} must be a whole number of bytes up to {limit}, got {length!r}")
    if not length:
        return b""
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"connection closed inside an event ({field} {length})") from None


@dataclass(frozen=True)
class AudioFormat:
    rate: int
    width: int
    channels: int

    def __str__(self) -> str:
        return f"{self.rate} Hz, {8 * self.width}-bit, {self.channels} channel(s)"

    @classmethod
    def of(cls, event: Event) -> AudioFormat:
        """The format an audio-start or audio-chunk names; a Fault if it is missing or not servable."""
        values = [event.data.get(key) for key in ("rate", "width", "channels")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise Fault(
                f"{event.type} needs positive whole rate, width and channels, got {values}", "bad-format"
            )
        audio = cls(*values)
        if audio.width not in WIDTHS:
            raise Fault(f"sample width {audio.width} bytes is not served: send 1, 2 or 4 (8, 16 or 32-bit PCM)",
                        "bad-format")  # fmt: skip
        return audio

    def samples(self, payload: bytes | None) -> np.ndarray:
        """(frames, channels) integer PCM from a chunk's payload (unsigned 8-bit, little-endian 16/32-bit)."""
        payload = payload or b""
        frame = self.width * self.channels
        if len(payload) % frame:
            raise Fault(
                f"audio-chunk of {len(payload)} bytes is not whole frames of {frame} bytes", "bad-audio"
            )
        return np.frombuffer(payload, dtype=WIDTHS[self.width]).reshape(-1, self.channels)
