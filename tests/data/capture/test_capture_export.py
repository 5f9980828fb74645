"""Flows to pcap (`tsda data export`, `tsda.data.capture.export`) and back: valid headers,
an exact round trip, chunked import of many interleaved flows, bad input."""

from __future__ import annotations

from pathlib import Path

import dpkt
import numpy as np
import pyarrow.parquet as pq
import pytest
from support.cli import cli_error

from tsda.cli import main
from tsda.data.capture.export import export_table
from tsda.data.capture.flows import FlowRules
from tsda.data.capture.importer import import_captures
from tsda.data.capture.labels import Labeller
from tsda.data.sources import read_parquet, write_parquet
from tsda.data.synthetic import make_synthetic
from tsda.data.table import FlowTable


@pytest.fixture(scope="module")
def table() -> FlowTable:
    return make_synthetic(n_apps=4, scale=0.02, seed=0)


def exported(table: FlowTable, folder: Path, udp_every: int = 3, nanoseconds: bool = False) -> tuple[Path, Path]:
    """`table` as a pcap (every `udp_every`-th flow UDP, flows starting 5 ms apart, so they
    interleave) and its rules file."""
    tcp = np.arange(len(table)) % udp_every != 0
    start_ns = 1_700_000_000_000_000_000 + np.arange(len(table), dtype=np.int64) * 5_000_000
    path = folder / "flows.pcap"
    export_table(table, path, tcp, start_ns, nanoseconds=nanoseconds)
    return path, path.with_suffix(".rules.csv")


def same_flows(table: FlowTable, flows: Path, atol: float) -> None:
    """Every flow of `table` comes back (matched by its client port) with its class, sizes,
    directions and times."""
    back = pq.read_table(flows).to_pylist()
    assert len(back) == len(table)
    for row in back:
        f = row["src_port"] - 1024  # the exporter's client port of flow f
        n = int(table.lengths[f])
        assert row["app"] == table.class_names[table.labels[f]]
        assert row["pkts_size"] == table.sizes[f, :n].astype(int).tolist()
        assert row["pkts_dir"] == table.directions[f, :n].tolist()
        assert np.allclose(row["timetofirst"], table.times[f, :n] - table.times[f, 0], atol=atol, rtol=0)
        assert row["protocol"] == ("UDP" if f % 3 == 0 else "TCP")


def test_round_trip_is_exact(table: FlowTable, tmp_path: Path) -> None:
    cap, rules = exported(table, tmp_path)
    out = tmp_path / "back.parquet"
    import_captures([cap], out, FlowRules(idle_timeout=3600), Labeller(str(rules)), progress=False)
    same_flows(table, out, atol=0.5e-6)  # microsecond timestamps


def test_nanosecond_round_trip(table: FlowTable, tmp_path: Path) -> None:
    cap, rules = exported(table, tmp_path, nanoseconds=True)
    out = tmp_path / "back.parquet"
    import_captures([cap], out, FlowRules(idle_timeout=3600), Labeller(str(rules)), progress=False)
    same_flows(table, out, atol=1e-9)


def test_chunked_import_of_interleaved_flows(table: FlowTable, tmp_path: Path) -> None:
    """Hundreds of flows in progress at once, read in blocks of 16 KB (about 20 packets): the same flows."""
    cap, rules = exported(table, tmp_path)
    out = tmp_path / "back.parquet"
    import_captures([cap], out, FlowRules(idle_timeout=3600), Labeller(str(rules)), progress=False, block_bytes=16_384)
    same_flows(table, out, atol=0.5e-6)


def test_headers_are_valid(table: FlowTable, tmp_path: Path) -> None:
    """dpkt recomputes every checksum and length to the values written; TCP sequence
    numbers advance by the payload each side sent."""
    cap, _ = exported(table.take(np.arange(12)), tmp_path)
    next_seq: dict[tuple, int] = {}
    seen = 0
    for _, buf in dpkt.pcap.Reader(open(cap, "rb")):
        ip = dpkt.ethernet.Ethernet(buf).data
        l4 = ip.data
        written = (ip.sum, l4.sum, ip.len)
        ip.sum = l4.sum = 0
        again = dpkt.ip.IP(bytes(ip))
        assert (again.sum, again.data.sum, again.len) == written
        if isinstance(l4, dpkt.tcp.TCP) and l4.data:
            key = (ip.src, l4.sport, ip.dst, l4.dport)
            assert next_seq.get(key, l4.seq) == l4.seq
            next_seq[key] = (l4.seq + len(l4.data)) % 2**32
        seen += 1
    assert seen > table.lengths[:12].sum()  # data packets plus the TCP handshakes


def test_export_command_and_reimport(tmp_path: Path, capsys) -> None:
    flows = tmp_path / "in.parquet"
    small = make_synthetic(n_apps=3, scale=0.01, seed=1)
    write_parquet(small, flows, extra={"protocol": np.where(np.arange(len(small)) % 2, "UDP", "TCP")})
    cap = tmp_path / "out.pcap"
    main(["data", "export", "--data.path", str(flows), "--out", str(cap)])
    assert "synthetic" in capsys.readouterr().out
    back = tmp_path / "back.parquet"
    main(
        [
            "data",
            "import",
            str(cap),
            "--out",
            str(back),
            "--label",
            str(cap.with_suffix(".rules.csv")),
            "--idle_timeout",
            "3600",
            "--progress",
            "false",
        ]
    )
    read = read_parquet(back, max_packets=small.max_packets)
    assert sorted(read.class_names) == sorted(small.class_names) and len(read) == len(small)
    assert sorted(pq.read_table(back).column("protocol").to_pylist()) == sorted(
        ["UDP", "TCP"] * (len(small) // 2) + ["TCP"] * (len(small) % 2)
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "{tmp}/missing/x.pcap"], r"--out .*missing/x\.pcap: the folder"),
        (["--out", "{tmp}/x.pcap", "--protocol_column", "proto"], r"--protocol_column: names a column of a flow file"),
        (["--out", "{tmp}/x.pcap", "--client_net", "10.0.0.0/33"], r"--client_net '10\.0\.0\.0/33': not a network"),
        (["--out", "{tmp}/x.pcap", "--server_net", "192.0.2.0/30"], r"--server_net 192\.0\.2\.0/30: 2 host addresses"),
        (["--out", "{tmp}/x.pcap", "--protocol", "sctp"], r"--protocol must be tcp or udp"),
        (["--out", "{tmp}/x.pcap", "--time_resolution", "ms"], r"--time_resolution must be us or ns"),
    ],
)
def test_export_bad_options(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    with cli_error(capsys, message):
        main(["data", "export", "--data.synthetic_scale", "0.01", *[a.format(tmp=tmp_path) for a in args]])
    assert not list(tmp_path.rglob("*.pcap")) and not list(tmp_path.rglob("*.csv"))


def test_export_names_a_missing_column_of_the_file(table: FlowTable, tmp_path: Path, capsys) -> None:
    flows = tmp_path / "in.parquet"
    write_parquet(table, flows)
    with cli_error(capsys, r"--start_column 'start': .*in\.parquet has no such column"):
        main(
            ["data", "export", "--data.path", str(flows), "--out", str(tmp_path / "x.pcap"), "--start_column", "start"]
        )
