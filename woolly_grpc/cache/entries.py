"""Cache entries as bytes, and cache keys: the formats every replica must agree on.

An entry is the list of serialized response messages of one successful call, framed with its
creation and expiry times and a CRC, so that a reader tells a real entry from garbage.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

ENTRY_FORMAT = b"WCE2"
"""The framing's magic number; part of every key, so two formats never read each other."""
_HEADER = struct.Struct("!4sddII")  # magic, created_at, expires_at, crc32 of the body, count
_LENGTH = struct.Struct("!I")


@dataclass(frozen=True)
class Entry:
    """A cached call: its serialized responses, when produced and until when served (Unix)."""

    messages: Sequence[bytes]
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
    if magic != ENTRY_FORMAT or zlib.crc32(memoryview(raw)[_HEADER.size :]) != crc:
        return None
    bounds, offset = array("Q"), _HEADER.size
    for _ in range(count):
        if offset + _LENGTH.size > len(raw):
            return None
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        bounds.extend((offset, offset + length))
        offset += length
    return Entry(_Framed(raw, bounds), created_at, expires_at) if offset == len(raw) else None


class _Framed(Sequence[bytes]):
    """An entry's messages, each cut from the entry's bytes only when it is asked for.

    Every hit on an entry then shares its bytes: a reader that does not read holds one message
    of its own, not a copy of the whole stream (500 such readers of a 200 KB stream held
    100 MB of copies).
    """

    __slots__ = ("_bounds", "_raw")

    def __init__(self, raw: bytes, bounds: array[int]) -> None:
        self._raw = raw
        self._bounds = bounds

    def __len__(self) -> int:
        return len(self._bounds) // 2

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._raw[self._bounds[2 * index] : self._bounds[2 * index + 1]]


def key_for(*parts: bytes | str) -> str:
    """SHA-256 over length-prefixed parts (so no two different part lists collide by joining)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(_LENGTH.pack(len(data)) + data)
    return digest.hexdigest()
