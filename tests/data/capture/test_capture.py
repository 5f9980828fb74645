"""`tsda data import`: captures written in the test (dpkt packets; pcapng blocks by hand) to
flows: TCP and UDP, IPv4 and IPv6, VLAN tags, both directions, idle splits, FIN/RST,
retransmissions, long flows, link types, SNI rules, chunking, and every bad input."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dpkt
import numpy as np
import pyarrow.parquet as pq
import pytest
from support.cli import QUIET, cli_error

from tsda.cli import main
from tsda.data.capture.decode import client_hello_sni
from tsda.data.capture.flows import FlowRules
from tsda.data.capture.importer import import_captures
from tsda.data.capture.labels import Labeller

SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04
T0 = 1_600_000_000.0


def ip_packet(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    udp: bool = False,
    flags: int = ACK,
    size: int = 0,
    seq: int = 0,
    payload: bytes | None = None,
) -> tuple[bytes, int]:
    """`(IP packet bytes, ethertype)` of one TCP or UDP packet (IPv6 when `src` has a ':')."""
    data = bytes(size) if payload is None else payload
    l4 = (
        dpkt.udp.UDP(sport=sport, dport=dport, data=data)
        if udp
        else dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=data)
    )
    l4_bytes = bytes(l4)
    if ":" in src:
        ip6 = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src),
            dst=socket.inet_pton(socket.AF_INET6, dst),
            nxt=17 if udp else 6,
            hlim=64,
            plen=len(l4_bytes),
        )
        return bytes(ip6.pack_hdr()) + l4_bytes, 0x86DD
    ip4 = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17 if udp else 6, data=l4)
    return bytes(ip4), 0x0800


def ethernet(ip: bytes, ethertype: int, vlan: int | None = None) -> bytes:
    macs = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"
    tag = b"" if vlan is None else struct.pack(">HH", 0x8100, vlan)
    return macs + tag + struct.pack(">H", ethertype) + ip


def write_pcap(path: Path, frames: list[tuple[float, bytes]], linktype: int = 1) -> Path:
    with open(path, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=linktype, nano=True)
        for ts, frame in frames:
            writer.writepkt(frame, ts=ts)
    return path


def tcp(t: float, client: bool, flags: int, size: int = 0, seq: int = 0, sport: int = 40000) -> tuple[float, bytes]:
    a, b = ("10.0.0.1", "1.1.1.1") if client else ("1.1.1.1", "10.0.0.1")
    pa, pb = (sport, 443) if client else (443, sport)
    return T0 + t, ethernet(*ip_packet(a, b, pa, pb, flags=flags, size=size, seq=seq))


def scenario() -> tuple[list[tuple[float, bytes]], list[dict]]:
    """Frames of a capture holding one case each, and the flows expected from it."""
    f: list[tuple[float, bytes]] = []
    # TCP v4: handshake, data both ways, a retransmission, pure ACKs, FIN both ways; a packet
    # of the same 5-tuple after the FINs starts a new flow
    f += [
        tcp(0.0, True, SYN, seq=99),
        tcp(0.001, False, SYN | ACK, seq=499),
        tcp(0.002, True, ACK, seq=100),
        tcp(0.010, True, PSH | ACK, 100, seq=100),
        tcp(0.020, False, PSH | ACK, 1400, seq=500),
        tcp(0.021, True, ACK, seq=200),
        tcp(0.030, False, PSH | ACK, 1400, seq=500),  # retransmission
        tcp(0.040, False, PSH | ACK, 500, seq=1900),
        tcp(0.050, True, FIN | ACK, seq=200),
        tcp(0.051, False, FIN | ACK, seq=2400),
        tcp(0.052, True, ACK, seq=201),
        tcp(1.0, True, PSH | ACK, 50, seq=201),
    ]
    # UDP v6 in VLAN 7, the server speaking first; an idle gap of 200 s splits it
    v6 = [
        ("2001:db8::2", "2001:db8::1", 53, 5353, 120),
        ("2001:db8::1", "2001:db8::2", 5353, 53, 40),
        ("2001:db8::2", "2001:db8::1", 53, 5353, 80),
    ]
    for i, (s, d, sp, dp, n) in enumerate(v6):
        f.append((T0 + 2.0 + i * 0.1, ethernet(*ip_packet(s, d, sp, dp, udp=True, size=n), vlan=7)))
    f.append((T0 + 202.5, ethernet(*ip_packet("2001:db8::1", "2001:db8::2", 5353, 53, udp=True, size=33), vlan=7)))
    # TCP with a RST: the packet after it starts a new flow
    f += [
        tcp(3.0, True, PSH | ACK, 10, seq=1, sport=41000),
        tcp(3.1, False, PSH | ACK, 20, seq=1, sport=41000),
        tcp(3.2, False, RST | ACK, seq=21, sport=41000),
        tcp(3.3, True, PSH | ACK, 30, seq=11, sport=41000),
    ]
    # a flow longer than max_packets (80 data packets, alternating)
    seqs = [1, 1]
    for i in range(80):
        side = i % 2
        f.append(tcp(4.0 + i * 0.001, side == 0, PSH | ACK, 10 + i, seq=seqs[side], sport=42000))
        seqs[side] += 10 + i
    f.sort(key=lambda x: x[0])
    expected = [
        {
            "sizes": [100, 1400, 500],
            "dirs": [0, 1, 1],
            "times": [0.0, 0.010, 0.030],
            "packets": 3,
            "src": ("10.0.0.1", 40000),
            "dst": ("1.1.1.1", 443),
            "protocol": "TCP",
        },
        {"sizes": [50], "dirs": [0], "times": [0.0], "packets": 1, "src": ("10.0.0.1", 40000)},
        {
            "sizes": [120, 40, 80],
            "dirs": [0, 1, 0],
            "times": [0.0, 0.1, 0.2],
            "packets": 3,
            "src": ("2001:db8::2", 53),
            "dst": ("2001:db8::1", 5353),
            "protocol": "UDP",
        },
        {"sizes": [10, 20], "dirs": [0, 1], "times": [0.0, 0.1], "packets": 2, "src": ("10.0.0.1", 41000)},
        {"sizes": [30], "dirs": [0], "times": [0.0], "packets": 1, "src": ("10.0.0.1", 41000)},
        {
            "sizes": [10 + i for i in range(64)],
            "dirs": [i % 2 for i in range(64)],
            "times": [i * 0.001 for i in range(64)],
            "packets": 80,
            "src": ("10.0.0.1", 42000),
        },
        {"sizes": [33], "dirs": [0], "times": [0.0], "packets": 1, "src": ("2001:db8::1", 5353)},
    ]
    return f, expected


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def by_start(table: list[dict]) -> list[dict]:
    return sorted(table, key=lambda r: (r["start_timestamp"], r["src_port"]))


def check(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(by_start(got), expected):
        assert g["pkts_size"] == e["sizes"] and g["pkts_dir"] == e["dirs"] and g["packets"] == e["packets"], g
        assert np.allclose(g["timetofirst"], e["times"], atol=1e-6), g
        assert (g["src_ip"], g["src_port"]) == e["src"]
        if "dst" in e:
            assert (g["dst_ip"], g["dst_port"], g["protocol"]) == (*e["dst"], e["protocol"])


@pytest.fixture
def capture(tmp_path: Path) -> tuple[Path, list[dict]]:
    frames, expected = scenario()
    folder = tmp_path / "com.example.app"
    folder.mkdir()
    return write_pcap(folder / "one.pcap", frames), expected


def test_import_finds_every_flow_of_the_scenario(capture: tuple[Path, list[dict]], tmp_path: Path) -> None:
    path, expected = capture
    out = tmp_path / "flows.parquet"
    main(["data", "import", str(path.parent), "--out", str(out), "--progress", "false"])
    got = rows(out)
    check(got, expected)
    assert {r["app"] for r in got} == {"com.example.app"} and {r["source"] for r in got} == {str(path)}
    first = by_start(got)[0]
    assert first["bytes"] == 2000 and first["duration"] == pytest.approx(0.051, abs=1e-6)


def test_chunking_does_not_change_the_flows(capture: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """Blocks of a few hundred bytes cut records and carry flows over many chunks: the same
    flows (rows come out as flows end, so only their order may differ)."""
    path, _ = capture
    whole, chunked = tmp_path / "a.parquet", tmp_path / "b.parquet"
    import_captures([path], whole, progress=False)
    import_captures([path], chunked, progress=False, block_bytes=300)
    assert by_start(rows(whole)) == by_start(rows(chunked))


def test_options_keep_zero_payload_retransmissions_and_change_timeouts(
    capture: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    path, _ = capture
    out = tmp_path / "all.parquet"
    import_captures(
        [path],
        out,
        FlowRules(idle_timeout=300, max_packets=100, keep_zero_payload=True, keep_retransmissions=True),
        progress=False,
    )
    got = by_start(rows(out))
    assert got[0]["pkts_size"] == [0, 0, 0, 100, 1400, 0, 1400, 500, 0, 0]  # ends with the second FIN
    assert got[0]["pkts_dir"] == [0, 1, 0, 0, 1, 0, 1, 1, 0, 1]
    udp = [r for r in got if r["protocol"] == "UDP"]
    assert len(udp) == 1 and udp[0]["pkts_size"] == [120, 40, 80, 33]  # no idle split at 300 s
    assert max(len(r["pkts_size"]) for r in got) == 80


def test_active_timeout_cuts_a_long_flow(tmp_path: Path) -> None:
    frames = [tcp(i * 10.0, i % 2 == 0, PSH | ACK, 5, seq=1 + 5 * (i // 2)) for i in range(10)]  # 0 .. 90 s
    out = tmp_path / "f.parquet"
    import_captures([write_pcap(tmp_path / "a.pcap", frames)], out, FlowRules(active_timeout=35), progress=False)
    assert [len(r["pkts_size"]) for r in by_start(rows(out))] == [4, 4, 2]  # cut at 40 s and 80 s


def pcapng(frames: list[tuple[float, bytes, int]]) -> bytes:
    """A pcapng file: interface 0 Ethernet in nanoseconds, interface 1 raw IP in
    microseconds; `frames` as (time, bytes, interface)."""

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0))
    out += block(1, struct.pack("<HHI", 101, 0, 0))
    for t, data, iface in frames:
        ticks = round(t * (1e9 if iface == 0 else 1e6))
        out += block(6, struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFF_FFFF, len(data), len(data)) + data)
    return out


def test_pcapng_with_two_interfaces_equals_the_pcap(capture: tuple[Path, list[dict]], tmp_path: Path) -> None:
    _, expected = capture
    frames = []
    for i, (ts, frame) in enumerate(scenario()[0]):  # every other packet through the raw-IP interface
        link = 18 if frame[12:14] == b"\x81\x00" else 14
        frames.append((ts, frame[link:], 1) if i % 2 else (ts, frame, 0))
    ng = tmp_path / "c.pcapng"
    ng.write_bytes(pcapng(frames))
    out = tmp_path / "ng.parquet"
    import_captures([ng], out, progress=False)
    check(rows(out), expected)


def test_linux_cooked_capture(tmp_path: Path) -> None:
    ip, et = ip_packet("10.1.1.1", "10.2.2.2", 1234, 80, size=77)
    reply, _ = ip_packet("10.2.2.2", "10.1.1.1", 80, 1234, size=1000)
    sll = lambda body: struct.pack(">HHH8sH", 0, 1, 6, b"\x02" * 8, et) + body  # noqa: E731
    out = tmp_path / "f.parquet"
    import_captures(
        [write_pcap(tmp_path / "s.pcap", [(T0, sll(ip)), (T0 + 0.5, sll(reply))], linktype=113)], out, progress=False
    )
    assert [(r["pkts_size"], r["pkts_dir"]) for r in rows(out)] == [([77, 1000], [0, 1])]


def client_hello(name: str) -> bytes:
    sni = struct.pack(">HBH", len(name) + 3, 0, len(name)) + name.encode()
    ext = struct.pack(">HH", 0, len(sni)) + sni
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack(">H", len(ext)) + ext
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake


def test_client_hello_sni() -> None:
    assert client_hello_sni(client_hello("api.example.com")) == "api.example.com"
    assert client_hello_sni(client_hello("x")[:20]) is None
    assert client_hello_sni(b"\x17\x03\x03\x00\x10" + bytes(16)) is None


def test_rules_label_by_sni_server_and_port(tmp_path: Path) -> None:
    hello = client_hello("edge.video.example.net")
    frames = [
        (T0, ethernet(*ip_packet("10.0.0.5", "8.8.8.8", 5000, 443, payload=hello, seq=1))),
        (T0 + 0.1, ethernet(*ip_packet("8.8.8.8", "10.0.0.5", 443, 5000, size=700, seq=1))),
        (T0 + 1, ethernet(*ip_packet("10.0.0.5", "9.9.9.9", 5001, 853, size=60, seq=1))),
        (T0 + 2, ethernet(*ip_packet("10.0.0.5", "7.7.7.7", 5002, 8080, size=60, seq=1))),
    ]
    cap = write_pcap(tmp_path / "a.pcap", frames)
    rules = tmp_path / "rules.csv"
    rules.write_text(
        "app,sni,server_ip,server_port,protocol\nvideo,.*\\.video\\.example\\.net,,,\ndns,,9.9.9.0/24,853,tcp\n"
    )
    out = tmp_path / "f.parquet"
    import_captures([cap], out, labeller=Labeller(str(rules)), progress=False)
    got = by_start(rows(out))
    assert [(r["app"], r["sni"]) for r in got] == [("video", "edge.video.example.net"), ("dns", None)]
    import_captures([cap], out, labeller=Labeller(str(rules), unmatched="unknown"), progress=False)
    assert [r["app"] for r in by_start(rows(out))] == ["video", "dns", "unknown"]


def test_file_name_regex_labels(capture: tuple[Path, list[dict]], tmp_path: Path) -> None:
    path, _ = capture
    named = path.rename(path.parent / "netflix_2024-01-01.pcap")
    out = tmp_path / "f.parquet"
    main(["data", "import", str(named), "--out", str(out), "--label", "file:^([a-z]+)_", "--progress", "false"])
    assert {r["app"] for r in rows(out)} == {"netflix"}


def test_an_imported_capture_trains(tmp_path: Path) -> None:
    frames = []
    for app, server in enumerate(("1.1.1.1", "2.2.2.2")):
        for k in range(30):
            port = 10_000 + 100 * app + k
            for i in range(12):
                size = 100 + 1000 * app + 7 * i if i % 2 else 60 + 20 * app
                s, d = ("10.0.0.9", server) if i % 2 == 0 else (server, "10.0.0.9")
                ps, pd = (port, 443) if i % 2 == 0 else (443, port)
                frames.append(
                    (T0 + k + i * 0.01 * (app + 1), ethernet(*ip_packet(s, d, ps, pd, size=size, seq=1 + 1000 * i)))
                )
    frames.sort(key=lambda x: x[0])
    cap = write_pcap(tmp_path / "mix.pcap", frames)
    rules = tmp_path / "r.csv"
    rules.write_text("server_ip,app\n1.1.1.1,one\n2.2.2.2,two\n")
    flows = tmp_path / "flows.parquet"
    main(["data", "import", str(cap), "--out", str(flows), "--label", str(rules), "--progress", "false"])
    run = tmp_path / "run"
    main(
        [
            "fit",
            "--model",
            "tsda.classifier.module.ClassifierModule",
            "--data.path",
            str(flows),
            "--data.min_class_size",
            "5",
            "--trainer.max_epochs",
            "1",
            *QUIET,
            "--run_dir",
            str(run),
        ]
    )
    assert (run / "metrics.json").is_file()


# -- bad input ------------------------------------------------------------------------------


def test_truncated_capture_names_the_packet_and_skip_leaves_it_out(
    capture: tuple[Path, list[dict]], tmp_path: Path, capsys
) -> None:
    path, expected = capture
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-10])
    out = tmp_path / "f.parquet"
    n = len(list(dpkt.pcap.Reader(open(path, "rb"))))
    with cli_error(capsys, rf"cut\.pcap: packet {n - 1}: truncated capture"):
        main(["data", "import", str(cut), "--out", str(out), "--progress", "false"])
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))
    main(["data", "import", str(cut), "--out", str(out), "--invalid_packets", "skip", "--progress", "false"])
    assert "truncated capture" in capsys.readouterr().err
    check(rows(out), expected[:-1])  # the cut packet was the last: the 33-byte datagram's flow is gone


def test_undecodable_packet_is_an_error_or_skipped(tmp_path: Path, capsys) -> None:
    good = ethernet(*ip_packet("10.0.0.1", "10.0.0.2", 1, 2, size=10, seq=1))
    later = ethernet(*ip_packet("10.0.0.1", "10.0.0.2", 1, 2, size=10, seq=11))
    bad = bytearray(good)
    bad[14] = 0x43  # IPv4 with a 12-byte header: malformed
    cap = write_pcap(tmp_path / "b.pcap", [(T0, good), (T0 + 1, bytes(bad)), (T0 + 2, later)])
    out = tmp_path / "f.parquet"
    with cli_error(capsys, r"b\.pcap: packet 1: undecodable"):
        main(["data", "import", str(cap), "--out", str(out), "--progress", "false"])
    assert not out.exists()
    main(["data", "import", str(cap), "--out", str(out), "--invalid_packets", "skip", "--progress", "false"])
    assert "'undecodable': 1" in capsys.readouterr().out
    assert rows(out)[0]["pkts_size"] == [10, 10]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"empty file"),
        (b"hello, this is text\n" * 3, r"not a pcap or pcapng"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1), r"empty capture"),
        (
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 105)
            + struct.pack("<IIII", 1, 0, 20, 20)
            + bytes(20),
            r"packet 0: unsupported link type 105",
        ),
    ],
)
def test_bad_captures(content: bytes, message: str, tmp_path: Path, capsys) -> None:
    cap = tmp_path / "x.pcap"
    cap.write_bytes(content)
    out = tmp_path / "f.parquet"
    with cli_error(capsys, rf"x\.pcap.*{message}"):
        main(["data", "import", str(cap), "--out", str(out), "--progress", "false"])
    assert not out.exists()


@pytest.mark.parametrize(
    "rules, message",
    [
        ("app,server,port\na,1.1.1.1,443\n", r"unknown column 'server'"),
        ("app,sni\na,([bad\n", r"row 1, column 'sni'"),
        ("app,server_ip\na,1.1.1.999\n", r"row 1, column 'server_ip'"),
        ("app,server_port\na,70000\n", r"row 1, column 'server_port'"),
    ],
)
def test_bad_rules_files(rules: str, message: str, capture: tuple[Path, list[dict]], tmp_path: Path, capsys) -> None:
    path, _ = capture
    file = tmp_path / "rules.csv"
    file.write_text(rules)
    out = tmp_path / "f.parquet"
    with cli_error(capsys, rf"--label .*rules\.csv: {message}"):
        main(["data", "import", str(path), "--out", str(out), "--label", str(file)])
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "{tmp}/missing/f.parquet"], r"--out .*missing/f\.parquet: the folder .* does not exist"),
        (["--out", "{tmp}/f.csv"], r"--out .*f\.csv: .*Parquet"),
        (["--out", "{tmp}/f.parquet", "--label", "ndpi"], r"--label ndpi"),
        (["--out", "{tmp}/f.parquet", "--label", "file:(["], r"--label 'file:\(\[': invalid regular expression"),
        (["--out", "{tmp}/f.parquet", "--unmatched", "unknown"], r"--unmatched: applies to --label RULES\.csv only"),
        (["--out", "{tmp}/f.parquet", "--idle_timeout", "0"], r"--idle_timeout must be > 0"),
        (["--out", "{tmp}/f.parquet", "--invalid_packets", "maybe"], r"--invalid_packets must be error or skip"),
    ],
)
def test_bad_options(args: list[str], message: str, capture: tuple[Path, list[dict]], tmp_path: Path, capsys) -> None:
    path, _ = capture
    with cli_error(capsys, message):
        main(["data", "import", str(path), *[a.format(tmp=tmp_path) for a in args]])
    assert not list(tmp_path.glob("*.parquet"))
