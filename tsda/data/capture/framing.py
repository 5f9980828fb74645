"""Records of a pcap or pcapng file, in chunks: where each packet's bytes are, its captured
length, its timestamp and its link type.

The file is read in blocks of `block_bytes`; one Python step per record finds the next
record (a record's length says where the next one starts, so this walk is inherently
sequential), everything else is numpy. A record cut by the end of a block is carried into
the next block, so memory is bounded by the block size, never by the file's.

Formats: classic pcap (microsecond `0xa1b2c3d4` and nanosecond `0xa1b23c4d` magic, either
byte order) and pcapng (enhanced and obsolete packet blocks; several interfaces with their
own link types and `if_tsresol`; several sections). pcapng simple packet blocks carry no
timestamp and are refused.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tsda.errors import TsdaError

PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}  # -> (byte order, ns per tick)
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
#: a record longer than this is taken as corruption (pcap's own upper bound for snaplen)
MAX_RECORD = 262_144


class CaptureError(TsdaError):
    """Bad capture input: the message names the file (and the packet index where there is one)."""


@dataclass
class Records:
    """One chunk of a capture's records.

    Attributes:
        data: `(bytes,)` uint8, the block the packets lie in.
        start: `(n,)` int64 offset of each packet's first byte in `data`.
        caplen: `(n,)` int64 bytes captured of each packet.
        ts_ns: `(n,)` int64 timestamp, nanoseconds since the epoch.
        linktype: `(n,)` int32 link type of each packet (LINKTYPE_* numbers).
        index: `(n,)` int64 position of each packet in its file (0 = first).
        consumed: bytes of the file read up to the end of this chunk's last record.
    """

    data: np.ndarray
    start: np.ndarray
    caplen: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    index: np.ndarray
    consumed: int = 0

    def __len__(self) -> int:
        return len(self.start)


def _fields(block: memoryview, pos: np.ndarray, order: str, offset: int, count: int) -> np.ndarray:
    """`(n, count)` uint32 words at `pos + offset` of `block`, in byte order `order`."""
    raw = np.frombuffer(block, dtype=np.uint8)
    idx = pos[:, None] + offset + np.arange(4 * count)[None, :]
    return raw[idx].copy().view(np.dtype(f"{order}u4")).reshape(len(pos), count)


class _Window:
    """Blocks of a memory-mapped file: each block starts where the last whole record of the
    previous one ended (no copy of a cut record), and pages already read are given back
    to the OS, so resident memory stays at about one block whatever the file's size."""

    def __init__(self, fh: BinaryIO, start: int, block_bytes: int) -> None:
        self.size = os.fstat(fh.fileno()).st_size
        self.mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.offset, self.block_bytes = start, block_bytes

    def block(self, need: int = 0) -> memoryview | None:
        """At least `block_bytes` (or `need`) bytes from the current offset, fewer at the
        end of the file; None once everything was consumed."""
        if self.offset >= self.size:
            return None
        return memoryview(self.mm)[self.offset : min(self.size, self.offset + max(self.block_bytes, need))]

    def at_end(self, block: memoryview) -> bool:
        return self.offset + len(block) >= self.size

    def advance(self, n: int) -> None:
        page = mmap.PAGESIZE
        lo, hi = self.offset // page * page, (self.offset + n) // page * page
        if hasattr(mmap, "MADV_DONTNEED") and hi > lo:
            self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        self.offset += n

    @property
    def left(self) -> int:
        return self.size - self.offset


def _truncated(path: Path, index: int, have: int, need: int) -> CaptureError:
    return CaptureError(
        f"{path}: packet {index}: truncated capture (the file ends mid-packet: "
        f"{have} of {need} bytes); --invalid_packets skip leaves it out"
    )


def _pcap_records(
    path: Path, fh: BinaryIO, header: bytes, block_bytes: int, skip_invalid: bool, warn: list[str]
) -> Iterator[Records]:
    if len(header) < 24:
        raise CaptureError(f"{path}: truncated pcap file header ({len(header)} of 24 bytes)")
    order, tick = PCAP_MAGIC[header[:4]]
    linktype = struct.unpack(order + "I", header[20:24])[0] & 0x0FFF_FFFF
    win = _Window(fh, 24, block_bytes)
    incl_of = struct.Struct(order + "I").unpack_from
    index, need = 0, 0
    while (block := win.block(need)) is not None:
        pos, end, need = 0, len(block), 0
        offsets: list[int] = []
        append = offsets.append
        while pos + 16 <= end:
            incl = incl_of(block, pos + 8)[0]
            if incl > MAX_RECORD:
                raise CaptureError(
                    f"{path}: packet {index + len(offsets)}: record length {incl} is not a "
                    f"packet's (more than {MAX_RECORD} bytes): a corrupt capture"
                )
            if pos + 16 + incl > end:
                need = 16 + incl
                break
            append(pos)
            pos += 16 + incl
        if not offsets:
            if win.at_end(block):
                break
            continue
        chunk = _pcap_chunk(block, np.asarray(offsets, dtype=np.int64), order, tick, linktype, index)
        chunk.consumed = win.offset + pos
        yield chunk
        index += len(offsets)
        win.advance(pos)
    if win.left:
        tail = win.block(win.left) or memoryview(b"")
        need = incl_of(tail, 8)[0] + 16 if len(tail) >= 12 else 16
        err = _truncated(path, index, len(tail), need)
        if not skip_invalid:
            raise err
        warn.append(str(err))


def _pcap_chunk(block: memoryview, pos: np.ndarray, order: str, tick: int, linktype: int, index: int) -> Records:
    words = _fields(block, pos, order, 0, 3).astype(np.int64)  # (n, 3): sec, frac, incl
    n = len(pos)
    return Records(
        data=np.frombuffer(block, dtype=np.uint8),
        start=pos + 16,
        caplen=words[:, 2],
        ts_ns=words[:, 0] * 1_000_000_000 + words[:, 1] * tick,
        linktype=np.full(n, linktype, dtype=np.int32),
        index=index + np.arange(n, dtype=np.int64),
    )


def _tsresol_ns(options: bytes | memoryview, order: str) -> float:
    """Nanoseconds per timestamp unit from an interface description block's options."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = options[pos + 4]
            unit = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
            return unit * 1e9
        pos += 4 + (length + 3) // 4 * 4
    return 1_000.0


def _pcapng_records(
    path: Path, fh: BinaryIO, block_bytes: int, skip_invalid: bool, warn: list[str]
) -> Iterator[Records]:
    win = _Window(fh, 0, block_bytes)
    order = "<"
    interfaces: list[tuple[int, float]] = []  # (link type, ns per unit)
    index, need = 0, 0
    while (block := win.block(need)) is not None:
        pos, end, need = 0, len(block), 0
        rows: list[tuple[int, int, int, int, int]] = []  # (data offset, caplen, ts high, ts low, interface)
        while pos + 12 <= end:
            btype = struct.unpack_from(order + "I", block, pos)[0]
            if btype == 0x0A0D0D0A:  # a section header: its own byte order, interfaces anew
                magic = block[pos + 8 : pos + 12]
                order = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">" if magic == b"\x1a\x2b\x3c\x4d" else ""
                if not order:
                    raise CaptureError(f"{path}: corrupt pcapng section header (byte-order magic {magic.hex()})")
                interfaces = []
            blen = struct.unpack_from(order + "I", block, pos + 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
                raise CaptureError(f"{path}: packet {index + len(rows)}: corrupt pcapng block (length {blen})")
            if pos + blen > end:
                need = blen
                break
            if btype == 1:
                link, _, _snap = struct.unpack_from(order + "HHI", block, pos + 8)
                interfaces.append((link, _tsresol_ns(block[pos + 16 : pos + blen - 4], order)))
            elif btype in (6, 2):
                if btype == 6:
                    iface, hi, lo, cap = struct.unpack_from(order + "IIII", block, pos + 8)
                else:
                    iface, _drops, hi, lo, cap = struct.unpack_from(order + "HHIII", block, pos + 8)
                if iface >= len(interfaces):
                    raise CaptureError(
                        f"{path}: packet {index + len(rows)}: names interface {iface}, "
                        f"but only {len(interfaces)} are described"
                    )
                if 28 + cap > blen:
                    raise CaptureError(
                        f"{path}: packet {index + len(rows)}: corrupt pcapng block "
                        f"(captured length {cap} in a block of {blen} bytes)"
                    )
                rows.append((pos + 28, cap, hi, lo, iface))
            elif btype == 3:
                raise CaptureError(
                    f"{path}: packet {index + len(rows)}: a pcapng simple packet block carries no "
                    "timestamp; flows need one (re-save the capture with enhanced packet blocks)"
                )
            pos += blen
        if pos == 0 and win.at_end(block):
            break
        if rows:
            chunk = _pcapng_chunk(block, np.asarray(rows, dtype=np.int64), interfaces, index)
            chunk.consumed = win.offset + pos
            yield chunk
            index += len(rows)
        win.advance(pos)
    if win.left:
        err = _truncated(path, index, win.left, need or -1)
        if not skip_invalid:
            raise err
        warn.append(str(err))


def _pcapng_chunk(block: memoryview, rows: np.ndarray, interfaces: list[tuple[int, float]], index: int) -> Records:
    links = np.asarray([i[0] for i in interfaces], dtype=np.int32)
    unit_ns = np.asarray([i[1] for i in interfaces], dtype=np.float64)
    ticks = (rows[:, 2] << 32) | rows[:, 3]
    iface = rows[:, 4]
    whole = unit_ns[iface] >= 1.0
    ts = np.where(
        whole, ticks * np.rint(unit_ns[iface]).astype(np.int64), np.rint(ticks * unit_ns[iface]).astype(np.int64)
    )
    n = len(rows)
    return Records(
        data=np.frombuffer(block, dtype=np.uint8),
        start=rows[:, 0],
        caplen=rows[:, 1],
        ts_ns=ts,
        linktype=links[iface],
        index=index + np.arange(n, dtype=np.int64),
    )


def read_records(
    path: str | Path, block_bytes: int = 32 << 20, skip_invalid: bool = False, warnings_out: list[str] | None = None
) -> Iterator[Records]:
    """The records of the capture at `path`, chunk by chunk.

    Raises:
        CaptureError: an empty file, a file that is not a pcap or pcapng capture, a capture
            cut mid-packet (unless `skip_invalid`: then a warning goes to `warnings_out`),
            a corrupt record.
    """
    path = Path(path)
    warn = warnings_out if warnings_out is not None else []
    with open(path, "rb") as fh:
        head = fh.read(24)
        if not head:
            raise CaptureError(f"{path}: empty file, not a capture")
        if head[:4] in PCAP_MAGIC:
            fh.seek(24)
            yield from _pcap_records(path, fh, head, block_bytes, skip_invalid, warn)
        elif head[:4] == PCAPNG_MAGIC:
            fh.seek(0)
            yield from _pcapng_records(path, fh, block_bytes, skip_invalid, warn)
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng capture (starts with {head[:4].hex()})")
