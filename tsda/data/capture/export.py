"""Flows to a pcap file of synthetic packets: each flow one TCP or UDP conversation.

Headers are valid (Ethernet II, IPv4 with its checksum, TCP with sequence and
acknowledgement numbers that follow the bytes sent and its checksum, or UDP with its
checksum); payload bytes are zero. A flow's client gets its own (address, port) from
`client_net`, its server an address of `server_net` and `server_port`; its packets carry
the flow's sizes, directions and times, starting at its `start_ns`; the file holds every
packet in time order. Importing the file (`tsda data import` with `--keep_zero_payload`
when flows hold zero sizes, and timeouts longer than the flows' gaps) gives back the same
sizes, directions and times, to the file's timestamp resolution.
"""

from __future__ import annotations

import csv
import ipaddress
import struct
from pathlib import Path

import numpy as np

from tsda.data.capture.framing import CaptureError
from tsda.data.table import FlowTable
from tsda.runs import atomic_path

ETH, IP4 = 14, 20
PORTS_PER_HOST = 60_000
FIRST_PORT = 1_024
MAX_PAYLOAD = 65_535 - IP4 - 20
BATCH = 1 << 20
START_TIME, FLOW_GAP = 1_700_000_000.0, 0.01  # unix time of the first flow, seconds between flow starts


def _net(text: str, flag: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise CaptureError(f"{flag} {text!r}: not a network ({exc})") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.num_addresses < 4:
        raise CaptureError(f"{flag} {text!r}: an IPv4 network of at least 4 addresses is needed")
    return net


def spaced_starts(n: int, start: float = START_TIME, gap: float = FLOW_GAP) -> np.ndarray:
    """`(n,)` int64 start times (ns) of flows without their own: `start`, then every `gap` s."""
    return np.rint((start + gap * np.arange(n)) * 1e9).astype(np.int64)


def _checksum(words: np.ndarray) -> np.ndarray:
    """Internet checksum of rows of 16-bit words `(M, k)` int64 (ones' complement sum)."""
    s = words.sum(axis=1)
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _be(values: np.ndarray, width: int) -> np.ndarray:
    """`(M, width)` uint8 big-endian bytes of `values (M,)`."""
    shifts = 8 * np.arange(width - 1, -1, -1)
    return ((values[:, None] >> shifts) & 0xFF).astype(np.uint8)


def _words16(bytes_: np.ndarray) -> np.ndarray:
    return bytes_[:, 0::2].astype(np.int64) << 8 | bytes_[:, 1::2]


def _packet_plan(
    sizes: np.ndarray,
    dirs: np.ndarray,
    times: np.ndarray,
    lengths: np.ndarray,
    start_ns: np.ndarray,
    tcp: np.ndarray,
    tick: int,
) -> dict[str, np.ndarray]:
    """Per packet, in time order: flow, direction, size, timestamp, TCP flags, and the bytes
    this side (`own`) and the other (`other`) sent before it (sequence and acknowledgement
    numbers). Timestamps lie on the file's `tick` grid, so the times since a flow's first
    series packet are its times rounded to the tick.

    Each TCP flow opens with a handshake (SYN, SYN/ACK, ACK, no payload) in the three ticks
    before its first packet, so the client is explicit (an importer takes the sender of a
    flow's first packet as the client); a UDP flow whose first packet goes server to client
    opens with an empty client datagram for the same reason. Importing drops these
    zero-payload packets from the series by default."""
    n, p = sizes.shape
    real = np.arange(p)[None, :] < lengths[:, None]
    flow = np.repeat(np.arange(n), lengths)
    size, d = sizes[real].astype(np.int64), dirs[real].astype(np.int64)
    start = np.rint(start_ns / tick).astype(np.int64) * tick
    ts = start[flow] + np.rint(times[real] * (1e9 / tick)).astype(np.int64) * tick
    sent = np.where(d[None, :] == np.arange(2)[:, None], size[None, :], 0)  # (2, M) bytes by side
    before = np.cumsum(sent, axis=1) - sent
    if n:
        first = np.r_[0, np.cumsum(lengths)[:-1]]
        before -= before[:, first][:, flow]
    data = {
        "flow": flow,
        "dir": d,
        "size": size,
        "ts": ts,
        "flags": np.full(len(flow), 0x18),
        "own": np.where(d == 0, before[0], before[1]),
        "other": np.where(d == 0, before[1], before[0]),
    }
    shake = np.flatnonzero(tcp & (lengths > 0))
    lone = np.flatnonzero(~tcp & (lengths > 0) & (dirs[:, 0] == 1))
    k = len(shake)
    prefix = {
        "flow": np.r_[np.repeat(shake, 3), lone],
        "dir": np.r_[np.tile([0, 1, 0], k), np.zeros(len(lone), int)],
        "size": np.zeros(3 * k + len(lone), np.int64),
        "ts": np.r_[np.repeat(start[shake], 3) - np.tile([3, 2, 1], k) * tick, start[lone] - tick],
        "flags": np.r_[np.tile([0x02, 0x12, 0x10], k), np.zeros(len(lone), int)],
        "own": np.r_[np.tile([-1, -1, 0], k), np.zeros(len(lone), int)],
        "other": np.zeros(3 * k + len(lone), np.int64),
    }
    both = {key: np.concatenate([prefix[key], data[key]]).astype(np.int64) for key in data}
    order = np.lexsort((np.arange(len(both["ts"])), both["ts"]))
    return {key: v[order] for key, v in both.items()}


def write_pcap(
    path: str | Path,
    sizes: np.ndarray,
    dirs: np.ndarray,
    times: np.ndarray,
    lengths: np.ndarray,
    tcp: np.ndarray,
    start_ns: np.ndarray,
    client_net: str = "10.0.0.0/8",
    server_net: str = "192.0.2.0/24",
    server_port: int = 443,
    nanoseconds: bool = False,
    server_host: np.ndarray | None = None,
) -> int:
    """Write flows (`sizes`, `dirs`, `times (N, P)` as in `FlowTable`, `lengths (N,)`,
    `tcp (N,)` bool, `start_ns (N,)` int64) as packets to `path`, atomically; returns the
    number of packets. `server_host (N,)`: which address of `server_net` (0 = its first
    host) serves each flow; default: spread over the network.

    Raises:
        CaptureError: a size too large for one IPv4 packet (naming the row), a network too
            small for the flows, a port out of range.
    """
    n = len(lengths)
    cnet, snet = _net(client_net, "--client_net"), _net(server_net, "--server_net")
    if not 0 < server_port < 65536:
        raise CaptureError(f"--server_port {server_port}: not a port (1-65535)")
    if (n + PORTS_PER_HOST - 1) // PORTS_PER_HOST > cnet.num_addresses - 2:
        raise CaptureError(f"--client_net {client_net}: too small for {n} flows ({PORTS_PER_HOST} per address)")
    real = np.arange(sizes.shape[1])[None, :] < lengths[:, None]
    too_big = np.any(real & (sizes > MAX_PAYLOAD), axis=1)
    if too_big.any():
        raise CaptureError(
            f"row {int(np.flatnonzero(too_big)[0])}: a packet size above {MAX_PAYLOAD} bytes does "
            "not fit one IPv4 packet"
        )
    magic, tick = (0xA1B23C4D, 1) if nanoseconds else (0xA1B2C3D4, 1_000)
    plan = _packet_plan(sizes, dirs, times, lengths, start_ns, tcp, tick)
    flow = np.arange(n, dtype=np.int64)
    client_ip = int(cnet.network_address) + 1 + flow // PORTS_PER_HOST
    client_port = FIRST_PORT + flow % PORTS_PER_HOST
    hosts = snet.num_addresses - 2
    if server_host is None:
        server_host = flow % hosts
    elif len(server_host) and int(server_host.max()) >= hosts:
        raise CaptureError(f"--server_net {server_net}: {hosts} host addresses, {int(server_host.max()) + 1} needed")
    server_ip = int(snet.network_address) + 1 + np.asarray(server_host, dtype=np.int64)
    isn = (flow * 2_654_435_761 + 12_345) % (1 << 32)  # a fixed initial sequence number per flow and side
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262_144, 1))
        for lo in range(0, len(plan["ts"]), BATCH):
            part = {k: v[lo : lo + BATCH] for k, v in plan.items()}
            fh.write(_frames(part, tcp, client_ip, client_port, server_ip, server_port, isn, tick, lo))
    return len(plan["ts"])


def _frames(
    pk: dict[str, np.ndarray],
    tcp_flow: np.ndarray,
    client_ip: np.ndarray,
    client_port: np.ndarray,
    server_ip: np.ndarray,
    server_port: int,
    isn: np.ndarray,
    tick: int,
    first_id: int,
) -> bytes:
    """The pcap records (record header, Ethernet, IPv4, TCP/UDP, zero payload) of packets `pk`."""
    f, up = pk["flow"], pk["dir"] == 0
    tcp = tcp_flow[f]
    l4 = np.where(tcp, 20, 8)
    frame = ETH + IP4 + l4 + pk["size"]
    src = np.where(up, client_ip[f], server_ip[f])
    dst = np.where(up, server_ip[f], client_ip[f])
    sport = np.where(up, client_port[f], server_port)
    dport = np.where(up, server_port, client_port[f])
    m = len(f)
    ip = np.zeros((m, IP4), np.uint8)
    ip[:, 0], ip[:, 6], ip[:, 8] = 0x45, 0x40, 64
    ip[:, 2:4] = _be(IP4 + l4 + pk["size"], 2)
    ip[:, 4:6] = _be((first_id + np.arange(m)) & 0xFFFF, 2)
    ip[:, 9] = np.where(tcp, 6, 17)
    ip[:, 12:16], ip[:, 16:20] = _be(src, 4), _be(dst, 4)
    ip[:, 10:12] = _be(_checksum(_words16(ip)), 2)
    l4h = np.zeros((m, 20), np.uint8)
    l4h[:, 0:2], l4h[:, 2:4] = _be(sport, 2), _be(dport, 2)
    side_isn = np.where(up, isn[f], isn[f] ^ 0x5A5A_5A5A)
    other_isn = np.where(up, isn[f] ^ 0x5A5A_5A5A, isn[f])
    seq = (side_isn + pk["own"]) % (1 << 32)
    ack = np.where(pk["flags"] & 0x10, (other_isn + pk["other"]) % (1 << 32), 0)
    tcp_part = np.zeros((m, 20), np.uint8)
    tcp_part[:, 4:8], tcp_part[:, 8:12] = _be(seq, 4), _be(ack, 4)
    tcp_part[:, 12], tcp_part[:, 14:16] = 0x50, 0xFF  # header length 20 bytes, window
    tcp_part[:, 13] = pk["flags"]
    l4h[:, 4:] = np.where(tcp[:, None], tcp_part[:, 4:], 0)
    l4h[~tcp, 4:6] = _be(8 + pk["size"][~tcp], 2)
    length = l4 + pk["size"]
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + np.where(tcp, 6, 17) + length
    sums = _checksum(np.c_[_words16(l4h), pseudo])  # the zero payload adds nothing
    sums = np.where(~tcp & (sums == 0), 0xFFFF, sums)
    l4h[:, 16:18] = np.where(tcp[:, None], _be(sums, 2), 0)
    l4h[:, 6:8] = np.where(tcp[:, None], l4h[:, 6:8], _be(sums, 2))
    eth = np.zeros((m, ETH), np.uint8)
    eth[:, 0:6] = np.where(up[:, None], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
    eth[:, 6:12] = np.where(up[:, None], [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
    eth[:, 12:14] = [0x08, 0x00]
    hdr = np.zeros((m, 16), np.uint8)
    sec, frac = pk["ts"] // 1_000_000_000, (pk["ts"] % 1_000_000_000) // tick
    words = np.stack([sec, frac, frame, frame], axis=1).astype("<u4")
    hdr[:] = words.view(np.uint8).reshape(m, 16)
    record = 16 + frame
    out = np.zeros(int(record.sum()), np.uint8)
    at = np.r_[0, np.cumsum(record)[:-1]]
    head = np.c_[hdr, eth, ip, l4h]  # (m, 70): TCP rows use all 20 bytes of l4h, UDP rows 8
    width = 16 + ETH + IP4 + l4
    cols = np.arange(head.shape[1])[None, :]
    mask = cols < width[:, None]
    out[(at[:, None] + cols)[mask]] = head[mask]
    return out.tobytes()


def export_table(
    table: FlowTable,
    path: str | Path,
    tcp: np.ndarray,
    start_ns: np.ndarray,
    client_net: str = "10.0.0.0/8",
    server_net: str = "192.0.2.0/24",
    server_port: int = 443,
    nanoseconds: bool = False,
) -> tuple[int, Path]:
    """Write `table`'s flows to the pcap `path`, each class served by its own address of
    `server_net`, and beside it `<path stem>.rules.csv`, the rules file that labels them
    again on import (`tsda data import X.pcap --label X.rules.csv`); returns the packet
    count and the rules file."""
    times = table.times - table.times[:, :1]  # since each flow's first packet
    n = write_pcap(
        path,
        table.sizes,
        table.directions,
        times,
        table.lengths,
        tcp,
        start_ns,
        client_net,
        server_net,
        server_port,
        nanoseconds,
        server_host=table.labels,
    )
    base = int(ipaddress.ip_network(server_net, strict=False).network_address) + 1
    rules = Path(path).with_suffix(".rules.csv")
    with atomic_path(rules) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["server_ip", "app"])
        for k, name in enumerate(table.class_names):
            writer.writerow([str(ipaddress.IPv4Address(base + k)), name])
    return n, rules
