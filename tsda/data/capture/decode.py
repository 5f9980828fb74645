"""Link, IP and TCP/UDP headers of a chunk of records, decoded in numpy (no per-packet Python).

Link types: Ethernet (1, with up to two 802.1Q/802.1ad VLAN tags), raw IP (101, 12),
IPv4 (228), IPv6 (229), Linux cooked v1 (113) and v2 (276), BSD loopback (0, 108).
IPv6 hop-by-hop, routing and destination-option headers are skipped. IP fragments are not
reassembled: a first fragment counts with the payload it carries, later fragments (no
transport header) are left out and counted. Payload sizes come from the IP and TCP headers'
lengths, not from the captured length, so a capture with a short snap length still gives
true sizes.

Packets that are not IP (ARP, LLDP, ...) or not TCP/UDP (ICMP, ...) are not flows: they are
counted and left out. An IP packet whose headers are malformed or cut by the snap length is
*undecodable*: an error naming the file and packet index, or (`skip_invalid`) left out and
counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsda.data.capture.framing import CaptureError, Records

SUPPORTED_LINKS = {
    1: "Ethernet",
    101: "raw IP",
    12: "raw IP",
    228: "IPv4",
    229: "IPv6",
    113: "Linux cooked",
    276: "Linux cooked v2",
    0: "BSD loopback",
    108: "OpenBSD loopback",
}
TCP, UDP = 6, 17
FIN, SYN, RST = 0x01, 0x02, 0x04


@dataclass
class Packets:
    """Decoded TCP/UDP packets of a chunk, in capture order.

    Attributes:
        ts_ns: `(n,)` int64 timestamps (ns since the epoch).
        index: `(n,)` int64 packet index in the file.
        key: `(n, 5)` uint64 the bidirectional 5-tuple, endpoints in canonical order
            (A <= B): A's address (2 words, IPv4 as IPv4-mapped IPv6), B's address (2 words),
            `port_a << 24 | port_b << 8 | protocol`.
        from_b: `(n,)` bool, the packet was sent by endpoint B.
        payload: `(n,)` int64 transport payload bytes.
        seq: `(n,)` int64 TCP sequence number (0 for UDP).
        flags: `(n,)` uint8 TCP flags (0 for UDP).
        sni: `(n,)` object, the server name of a TLS ClientHello the packet starts (None
            elsewhere, and everywhere unless asked for).
        counts: what was left out: `not_ip`, `not_tcp_udp`, `fragments`, `undecodable`.
    """

    ts_ns: np.ndarray
    index: np.ndarray
    key: np.ndarray
    from_b: np.ndarray
    payload: np.ndarray
    seq: np.ndarray
    flags: np.ndarray
    sni: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts_ns)


class _Bytes:
    """Big-endian reads at per-packet offsets, 0 past a packet's captured bytes."""

    def __init__(self, rec: Records) -> None:
        self.data, self.start, self.caplen = rec.data, rec.start, rec.caplen
        self.last = len(rec.data) - 1

    def u8(self, off: np.ndarray | int) -> np.ndarray:
        return self.data[np.minimum(self.start + off, self.last)].astype(np.int64)

    def u16(self, off: np.ndarray | int) -> np.ndarray:
        return self.u8(off) << 8 | self.u8(off + 1)

    def u32(self, off: np.ndarray | int) -> np.ndarray:
        return self.u16(off) << 16 | self.u16(off + 2)

    def u64(self, off: np.ndarray | int) -> np.ndarray:
        return (self.u32(off).astype(np.uint64) << np.uint64(32)) | self.u32(off + 4).astype(np.uint64)


def _link(b: _Bytes, linktype: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(l3 offset (n,), ethertype (n,))`; ethertype 0x0800 IPv4, 0x86DD IPv6, -1 = by the
    IP version nibble (raw IP), anything else = not IP."""
    n = len(linktype)
    l3 = np.zeros(n, dtype=np.int64)
    et = np.full(n, -1, dtype=np.int64)
    eth = linktype == 1
    l3[eth], et[eth] = 14, b.u16(12)[eth]
    for _ in range(2):  # 802.1Q / 802.1ad tags
        tag = eth & np.isin(et, (0x8100, 0x88A8, 0x9100))
        et[tag] = b.u16(l3 + 2)[tag]
        l3[tag] += 4
    sll, sll2 = linktype == 113, linktype == 276
    l3[sll], et[sll] = 16, b.u16(14)[sll]
    l3[sll2], et[sll2] = 20, b.u16(0)[sll2]
    loop = np.isin(linktype, (0, 108))
    family = b.u32(0)
    swapped = ((family & 0xFF) << 24) | ((family & 0xFF00) << 8) | ((family >> 8) & 0xFF00) | (family >> 24)
    family = np.where(family > 0xFFFF, swapped, family)  # host byte order of the capturing machine
    l3[loop] = 4
    et[loop] = np.where(family == 2, 0x0800, np.where(np.isin(family, (10, 24, 28, 30)), 0x86DD, 0))[loop]
    et[linktype == 228], et[linktype == 229] = 0x0800, 0x86DD
    return l3, et


def _mix(words: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit hash of each row of `words (n, k)` uint64 (splitmix64 finaliser per word)."""
    h = np.full(len(words), np.uint64(seed), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = (h ^ words[:, j]) * np.uint64(0x9E37_79B9_7F4A_7C15)
            h ^= h >> np.uint64(31)
            h *= np.uint64(0xBF58_476D_1CE4_E5B9)
            h ^= h >> np.uint64(29)
    return h


def key_hash(key: np.ndarray) -> np.ndarray:
    """`(n, 2)` uint64: two independent 64-bit hashes of each 5-tuple (a 128-bit id; two
    distinct 5-tuples share one with probability about 2^-128 per pair)."""
    return np.stack([_mix(key, 0x243F_6A88_85A3_08D3), _mix(key, 0x1319_8A2E_0370_7344)], axis=1)


def decode(rec: Records, path: Path, skip_invalid: bool = False, want_sni: bool = False) -> Packets:
    """The TCP/UDP packets of `rec` (`want_sni`: read the server name of TLS ClientHellos).

    Raises:
        CaptureError: an unsupported link type; an undecodable IP packet (unless `skip_invalid`).
    """
    bad_links = set(np.unique(rec.linktype).tolist()) - set(SUPPORTED_LINKS)
    if bad_links:
        first = int(rec.index[np.isin(rec.linktype, list(bad_links))][0])
        raise CaptureError(
            f"{path}: packet {first}: unsupported link type {sorted(bad_links)[0]} "
            f"(supported: {', '.join(f'{k} {v}' for k, v in SUPPORTED_LINKS.items())})"
        )
    b = _Bytes(rec)
    l3, et = _link(b, rec.linktype)
    ver = b.u8(l3) >> 4
    v4 = (et == 0x0800) | ((et == -1) & (ver == 4))
    v6 = (et == 0x86DD) | ((et == -1) & (ver == 6))
    ip = v4 | v6
    bad = ip & ((v4 & (ver != 4)) | (v6 & (ver != 6)) | (l3 + 20 > b.caplen))
    ihl = (b.u8(l3) & 0x0F) * 4
    bad |= v4 & (ihl < 20)
    frag_field = b.u16(l3 + 6)
    later_fragment = v4 & ((frag_field & 0x1FFF) != 0)
    proto = np.where(v4, b.u8(l3 + 9), b.u8(l3 + 6))
    l4 = np.where(v4, l3 + ihl, l3 + 40)
    total = b.u16(l3 + 2)
    ip_end = np.where(v4, l3 + np.where(total > 0, total, b.caplen - l3), l3 + 40 + b.u16(l3 + 4))
    for _ in range(4):  # IPv6 extension headers before the transport header
        ext = v6 & np.isin(proto, (0, 43, 60))
        frag = v6 & (proto == 44)
        later_fragment |= frag & ((b.u16(l4 + 2) >> 3) != 0)
        step = np.where(ext, (b.u8(l4 + 1) + 1) * 8, np.where(frag, 8, 0))
        proto = np.where(ext | frag, b.u8(l4), proto)
        l4 = l4 + step
    transport = ip & ~bad & ~later_fragment & np.isin(proto, (TCP, UDP))
    tcp = transport & (proto == TCP)
    doff = np.where(tcp, (b.u8(l4 + 12) >> 4) * 4, 8)
    bad |= transport & ((l4 + np.where(tcp, 20, 8) > b.caplen) | (tcp & (doff < 20)))
    payload = ip_end - l4 - doff
    bad |= transport & (payload < 0)
    if bad.any() and not skip_invalid:
        raise CaptureError(
            f"{path}: packet {int(rec.index[bad][0])}: undecodable IP packet (malformed or cut "
            f"headers; {int(bad.sum())} such in this chunk); --invalid_packets skip leaves them out"
        )
    keep = transport & ~bad
    counts = {
        "not_ip": int((~ip).sum()),
        "not_tcp_udp": int((ip & ~bad & ~later_fragment & ~transport).sum()),
        "fragments": int((ip & ~bad & later_fragment).sum()),
        "undecodable": int(bad.sum()),
    }
    return _packets(rec, keep, v4, l3, l4, proto, doff, payload, tcp, counts, want_sni)


def _packets(
    rec: Records,
    keep: np.ndarray,
    v4: np.ndarray,
    l3: np.ndarray,
    l4: np.ndarray,
    proto: np.ndarray,
    doff: np.ndarray,
    payload: np.ndarray,
    tcp: np.ndarray,
    counts: dict[str, int],
    want_sni: bool,
) -> Packets:
    """Keys, sides and TCP fields of the kept packets."""
    idx = np.flatnonzero(keep)
    sub = _Bytes(Records(rec.data, rec.start[idx], rec.caplen[idx], rec.ts_ns[idx], rec.linktype[idx], rec.index[idx]))
    l3, l4, v4 = l3[idx], l4[idx], v4[idx]
    mapped = np.uint64(0xFFFF_0000_0000)
    src_hi = np.where(v4, np.uint64(0), sub.u64(l3 + 8))
    src_lo = np.where(v4, mapped | sub.u32(l3 + 12).astype(np.uint64), sub.u64(l3 + 16))
    dst_hi = np.where(v4, np.uint64(0), sub.u64(l3 + 24))
    dst_lo = np.where(v4, mapped | sub.u32(l3 + 16).astype(np.uint64), sub.u64(l3 + 32))
    sport, dport = sub.u16(l4), sub.u16(l4 + 2)
    from_b = (src_hi > dst_hi) | ((src_hi == dst_hi) & ((src_lo > dst_lo) | ((src_lo == dst_lo) & (sport > dport))))
    a_hi, a_lo = np.where(from_b, dst_hi, src_hi), np.where(from_b, dst_lo, src_lo)
    b_hi, b_lo = np.where(from_b, src_hi, dst_hi), np.where(from_b, src_lo, dst_lo)
    pa, pb = np.where(from_b, dport, sport), np.where(from_b, sport, dport)
    ports = (
        (pa.astype(np.uint64) << np.uint64(24)) | (pb.astype(np.uint64) << np.uint64(8)) | proto[idx].astype(np.uint64)
    )
    is_tcp = tcp[idx]
    data_at = l4 + doff[idx]
    size = payload[idx]
    sni = np.full(len(idx), None, dtype=object)
    if want_sni:
        hello = (
            is_tcp
            & (size >= 6)
            & (data_at + 6 <= sub.caplen)
            & (sub.u8(data_at) == 0x16)
            & (sub.u8(data_at + 5) == 0x01)
        )
        for i in np.flatnonzero(hello):
            lo = int(sub.start[i] + data_at[i])
            sni[i] = client_hello_sni(rec.data[lo : int(sub.start[i] + sub.caplen[i])].tobytes())
    return Packets(
        ts_ns=rec.ts_ns[idx],
        index=rec.index[idx],
        key=np.stack([a_hi, a_lo, b_hi, b_lo, ports], axis=1),
        from_b=from_b,
        payload=size,
        seq=np.where(is_tcp, sub.u32(l4 + 4), 0),
        flags=np.where(is_tcp, sub.u8(l4 + 13), 0).astype(np.uint8),
        sni=sni,
        counts=counts,
    )


def client_hello_sni(payload: bytes) -> str | None:
    """The server name (SNI) of a TLS ClientHello at the start of `payload`; None when the
    bytes are not a whole-enough ClientHello or name no server."""
    try:
        if payload[0] != 0x16 or payload[5] != 0x01:
            return None
        pos = 9 + 2 + 32  # record header, handshake header, client version, random
        pos += 1 + payload[pos]  # session id
        pos += 2 + int.from_bytes(payload[pos : pos + 2], "big")  # cipher suites
        pos += 1 + payload[pos]  # compression methods
        end = min(len(payload), pos + 2 + int.from_bytes(payload[pos : pos + 2], "big"))
        pos += 2
        while pos + 4 <= end:
            kind, length = (
                int.from_bytes(payload[pos : pos + 2], "big"),
                int.from_bytes(payload[pos + 2 : pos + 4], "big"),
            )
            if kind == 0:  # server_name: list length, name type (0 = host name), name length, name
                size = int.from_bytes(payload[pos + 7 : pos + 9], "big")
                name = payload[pos + 9 : pos + 9 + size]
                return name.decode("ascii") if payload[pos + 6] == 0 and len(name) == size else None
            pos += 4 + length
    except (IndexError, UnicodeDecodeError):
        return None
    return None
