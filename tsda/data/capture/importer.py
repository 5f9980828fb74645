"""`import_captures`: pcap/pcapng files or folders to one tcbench-schema Parquet file,
streamed: flows go out in row groups as they end, so memory follows the flows in progress.
Each capture file is its own stream (a flow never spans two files); rows come out in the
order flows end, file by file.

Columns: `app`, `pkts_size` (transport payload bytes), `pkts_dir` (0 = client to server),
`timetofirst` (seconds since the first series packet), `packets` and `bytes` (every series
packet of the flow), `src_ip`/`src_port` (the client: the sender of the flow's first
packet), `dst_ip`/`dst_port`, `protocol` (`TCP`/`UDP`), `start_timestamp` (unix seconds of
the flow's first packet), `duration` (first to last packet, seconds), `sni` (the client's
TLS server name when the rules asked for it, else null) and `source` (the capture file).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tsda.data.capture.decode import decode
from tsda.data.capture.flows import NS, FlowAssembler, FlowRules, Flows
from tsda.data.capture.framing import CaptureError, read_records
from tsda.data.capture.labels import FlowEnds, Labeller
from tsda.runs import atomic_path

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")
ROW_GROUP = 8_192  # flows per Parquet row group: what waits in memory before it is written
SCHEMA = pa.schema(
    [
        ("app", pa.string()),
        ("pkts_size", pa.list_(pa.int32())),
        ("pkts_dir", pa.list_(pa.int8())),
        ("timetofirst", pa.list_(pa.float64())),
        ("packets", pa.int32()),
        ("bytes", pa.int64()),
        ("src_ip", pa.string()),
        ("src_port", pa.int32()),
        ("dst_ip", pa.string()),
        ("dst_port", pa.int32()),
        ("protocol", pa.string()),
        ("start_timestamp", pa.float64()),
        ("duration", pa.float64()),
        ("sni", pa.string()),
        ("source", pa.string()),
    ]
)


@dataclass
class ImportReport:
    """What an import read, wrote and left out."""

    files: int = 0
    packets: int = 0
    flows: int = 0
    seconds: float = 0.0
    left_out: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def packets_per_second(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0

    def add(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.left_out[k] = self.left_out.get(k, 0) + int(v)


def capture_files(paths: Iterable[str | Path]) -> list[Path]:
    """The capture files named: files as given, folders searched recursively for
    `*.pcap`, `*.pcapng`, `*.cap`, `*.dmp` (sorted, so the output order is reproducible)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CAPTURE_SUFFIXES)
            if not found:
                raise CaptureError(f"{path}: no capture file ({', '.join(CAPTURE_SUFFIXES)}) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CaptureError(f"{path}: no such file or folder")
    if not files:
        raise CaptureError("no capture given")
    return files


def _address(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    """Text of IPv6 integers given as words (IPv4-mapped ones as IPv4)."""
    out = []
    for h, low in zip(hi.tolist(), lo.tolist()):
        if h == 0 and low >> 32 == 0xFFFF:
            out.append(str(ipaddress.IPv4Address(low & 0xFFFF_FFFF)))
        else:
            out.append(str(ipaddress.IPv6Address(h << 64 | low)))
    return out


def _ends(flows: Flows) -> FlowEnds:
    st = flows.state
    key, cb = st["key"], st["client_b"]
    a, b = key[:, 0:2], key[:, 2:4]
    ports = key[:, 4]
    pa_, pb = (
        ((ports >> np.uint64(24)) & np.uint64(0xFFFF)).astype(np.int64),
        ((ports >> np.uint64(8)) & np.uint64(0xFFFF)).astype(np.int64),
    )
    return FlowEnds(
        client=np.where(cb[:, None], b, a),
        server=np.where(cb[:, None], a, b),
        client_port=np.where(cb, pb, pa_),
        server_port=np.where(cb, pa_, pb),
        protocol=(ports & np.uint64(0xFF)).astype(np.int64),
        sni=st["sni"],
    )


def flows_to_arrow(flows: Flows, labels: np.ndarray, source: str) -> pa.Table:
    """The rows of `flows` whose label is not None, in the import schema."""
    # numpy's stub refuses None, which an object array compares element-wise
    keep = ~np.equal(labels, None)  # type: ignore[call-overload]
    ends = _ends(flows)
    lens = np.diff(flows.offsets)
    member = np.repeat(keep, lens)
    offsets = np.r_[0, np.cumsum(lens[keep])].astype(np.int32)
    ragged = lambda v, t: pa.ListArray.from_arrays(pa.array(offsets), pa.array(v[member], type=t))  # noqa: E731
    st = {k: v[keep] for k, v in flows.state.items()}
    return pa.table(
        {
            "app": pa.array(labels[keep].astype(str), pa.string()),
            "pkts_size": ragged(flows.sizes, pa.int32()),
            "pkts_dir": ragged(flows.dirs, pa.int8()),
            "timetofirst": ragged(flows.times_ns / NS, pa.float64()),
            "packets": pa.array(st["packets"], pa.int32()),
            "bytes": pa.array(st["bytes"], pa.int64()),
            "src_ip": pa.array(_address(ends.client[keep, 0], ends.client[keep, 1]), pa.string()),
            "src_port": pa.array(ends.client_port[keep], pa.int32()),
            "dst_ip": pa.array(_address(ends.server[keep, 0], ends.server[keep, 1]), pa.string()),
            "dst_port": pa.array(ends.server_port[keep], pa.int32()),
            "protocol": pa.array(np.where(ends.protocol[keep] == 6, "TCP", "UDP"), pa.string()),
            "start_timestamp": pa.array(st["start"] / NS, pa.float64()),
            "duration": pa.array((st["last"] - st["start"]) / NS, pa.float64()),
            "sni": pa.array(st["sni"], pa.string()),
            "source": pa.array(np.full(int(keep.sum()), source, dtype=object), pa.string()),
        },
        schema=SCHEMA,
    )


def _progress(total: int, enabled: bool):  # -> tqdm
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="import", disable=not enabled, leave=False)


def import_captures(
    paths: Iterable[str | Path],
    out: str | Path,
    rules: FlowRules = FlowRules(),
    labeller: Labeller | None = None,
    skip_invalid: bool = False,
    progress: bool = True,
    block_bytes: int = 32 << 20,
) -> ImportReport:
    """Read every capture of `paths` into flows and write them to `out` (Parquet, atomic:
    nothing is left at `out` when any file fails).

    Raises:
        CaptureError: a bad capture (see `read_records`, `decode`), an output folder that
            does not exist, no flow found.
    """
    out = Path(out)
    if not out.parent.is_dir():
        raise CaptureError(f"--out {out}: the folder {out.parent} does not exist")
    files = capture_files(paths)
    labeller = labeller or Labeller("folder")
    report = ImportReport(files=len(files))
    started = time.perf_counter()
    bar = _progress(sum(f.stat().st_size for f in files), progress)
    pending: list[pa.Table] = []
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:

        def flush(force: bool) -> None:
            rows = sum(len(t) for t in pending)
            if rows and (force or rows >= ROW_GROUP):
                writer.write_table(pa.concat_tables(pending), row_group_size=max(rows, 1))
                pending.clear()

        for path in files:
            assembler = FlowAssembler(rules)
            packets_here = 0

            def emit(flows: Flows, path: Path = path) -> None:
                if len(flows):
                    labels = labeller.for_flows(path, _ends(flows))
                    report.left_out["unmatched"] = report.left_out.get("unmatched", 0) + int(
                        np.equal(labels, None).sum()  # type: ignore[call-overload]  # as in flows_to_arrow
                    )
                    table = flows_to_arrow(flows, labels, str(path))
                    report.flows += len(table)
                    pending.append(table)
                    flush(False)

            done_bytes = 0
            for rec in read_records(path, block_bytes, skip_invalid, report.warnings):
                pk = decode(rec, path, skip_invalid, want_sni=labeller.wants_sni)
                report.add(pk.counts)
                packets_here += len(rec)
                emit(assembler.push(pk))
                bar.update(rec.consumed - done_bytes)
                done_bytes = rec.consumed
            if packets_here == 0:
                raise CaptureError(f"{path}: an empty capture (no packet)")
            emit(assembler.finish())
            report.add({"flows_without_series_packets": assembler.dropped_empty})
            report.packets += packets_here
            bar.update(path.stat().st_size - done_bytes)
        flush(True)
        bar.close()
        if report.flows == 0:
            raise CaptureError(
                f"no flow found in {', '.join(map(str, files))} (left out: {report.left_out}); nothing written"
            )
    report.seconds = time.perf_counter() - started
    return report
