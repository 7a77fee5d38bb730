"""Cache entries as bytes, and cache keys: the formats every replica must agree on.

An entry is the list of serialized response messages of one successful call, framed with its
creation and expiry times and a CRC, so that a reader tells a real entry from garbage.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

ENTRY_FORMAT = b"WCE2"
"""The framing's magic number; part of every key, so two formats never read each other."""
_HEADER = struct.Struct("!4sddII")  # magic, created_at, expires_at, crc32 of the body, count
_LENGTH = struct.Struct("!I")


@dataclass(frozen=True)
class Entry:
    """A cached call: its serialized responses, when produced and until when served (Unix)."""

    messages: tuple[bytes, ...]
    created_at: float
    expires_at: float

    def age_s(self, now: float) -> float:
        """Seconds since the entry was produced."""
        return max(0.0, now - self.created_at)


def encode_entry(entry: Entry) -> bytes:
    """Frame an entry; the CRC lets a reader tell garbage from a real entry."""
    body = b"".join(_LENGTH.pack(len(m)) + m for m in entry.messages)
    header = _HEADER.pack(
        ENTRY_FORMAT, entry.created_at, entry.expires_at, zlib.crc32(body), len(entry.messages)
    )
    return header + body


def decode_entry(raw: bytes) -> Entry | None:
    """The entry framed in `raw`, or None if it is not a well-formed entry."""
    if len(raw) < _HEADER.size:
        return None
    magic, created_at, expires_at, crc, count = _HEADER.unpack_from(raw)
    body = memoryview(raw)[_HEADER.size :]
    if magic != ENTRY_FORMAT or zlib.crc32(body) != crc:
        return None
    messages, offset = [], 0
    for _ in range(count):
        if offset + _LENGTH.size > len(body):
            return None
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        messages.append(bytes(body[offset : offset + length]))
        offset += length
    return Entry(tuple(messages), created_at, expires_at) if offset == len(body) else None


def key_for(*parts: bytes | str) -> str:
    """SHA-256 over length-prefixed parts (so no two different part lists collide by joining)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(_LENGTH.pack(len(data)) + data)
    return digest.hexdigest()
