"""`tsda data describe | import | export`: what a flow source holds; packet captures to flows
and flows back to packets.

    tsda data describe                                   # the embedded synthetic dataset
    tsda data describe --data.path ../shared/data/fgnet/d1.parquet --data.invalid_rows drop --json d1.json
    tsda data import captures/ --out flows.parquet       # app = each capture's folder
    tsda data import a.pcapng b.pcap --label rules.csv --unmatched unknown --out flows.parquet
    tsda data export --data.path flows.parquet --out flows.pcap

`describe` prints flows per class (raw, with more than `--data.min_packets` packets, and
kept by curation), a flow length summary, size and inter-arrival time quantiles and the
direction share; `--json OUT` writes the same numbers as JSON (atomically). Its `--data.*`
options are `tsda fit`'s (`FlowDataModule`); `--max_packets` packets are read per flow.

`import` reads pcap and pcapng files and folders (recursively) into the tcbench schema every
tsda command reads, plus the 5-tuple, start time, duration, bytes and the source file
(`tsda.data.capture`). `export` writes a flow file as synthetic packets (valid headers,
zero payload bytes), one TCP or UDP conversation per flow, each class served by its own
address, and beside it `OUT.rules.csv`, the `--label` file that labels the flows again on
import.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from jsonargparse import ArgumentParser, Namespace

from tsda.commands.options import (
    Applies,
    add_data_arguments,
    build_datamodule,
    command_parser,
    data_rules,
    pick_subcommand,
    refuse_inapplicable,
)
from tsda.data.capture.export import FLOW_GAP, START_TIME, export_table, spaced_starts
from tsda.data.capture.flows import FlowRules
from tsda.data.capture.importer import import_captures
from tsda.data.capture.labels import Labeller
from tsda.data.curation import FILE_ROW
from tsda.data.describe import describe, format_report
from tsda.data.table import FlowTable
from tsda.errors import TsdaError
from tsda.runs import write_json_atomic

_HELP = (
    "usage: tsda data {describe,import,export} [options]\n\ncommands:\n"
    "  describe  flows per class, lengths, size and IAT summaries of a source\n"
    "  import    pcap/pcapng files or folders to a flow table (Parquet)\n"
    "  export    a flow table to a pcap file of synthetic packets\n"
    "`tsda data COMMAND --help` describes each."
)


def describe_parser() -> ArgumentParser:
    parser = command_parser(
        "tsda data describe",
        "flows per class, lengths, size and IAT summaries of a source (the --data.* options are tsda fit's)",
    )
    parser.add_argument("--max_packets", type=int, default=64, help="packets read per flow")
    parser.add_argument("--json", type=str | None, default=None, help="also write the report as JSON to this file")
    add_data_arguments(parser)
    return parser


def import_parser() -> ArgumentParser:
    parser = command_parser(
        "tsda data import",
        "pcap/pcapng files or folders to a tcbench-schema flow table (README: Bring your own capture)",
    )
    parser.add_argument("captures", nargs="+", type=str, help="pcap/pcapng files or folders (searched recursively)")
    parser.add_argument("--out", type=str, required=True, help="the flow table to write (.parquet)")
    parser.add_argument(
        "--label",
        type=str,
        default="folder",
        help="folder (the capture's parent folder), file:REGEX (on the file name), RULES.csv, or none",
    )
    parser.add_argument("--unmatched", type=str, default="drop", help="--label RULES.csv: drop or unknown")
    parser.add_argument("--max_packets", type=int, default=64, help="series packets kept per flow")
    parser.add_argument("--idle_timeout", type=float, default=120.0, help="seconds of silence that end a flow")
    parser.add_argument("--active_timeout", type=float, default=1800.0, help="seconds after which a flow is cut")
    parser.add_argument(
        "--keep_zero_payload",
        type=bool,
        default=False,
        help="keep packets without payload (pure ACKs, handshakes) in the series",
    )
    parser.add_argument(
        "--keep_retransmissions",
        type=bool,
        default=False,
        help="keep retransmitted (and out-of-order) TCP segments in the series",
    )
    parser.add_argument(
        "--invalid_packets",
        type=str,
        default="error",
        help="error, or skip (leave undecodable packets out with a warning and a count)",
    )
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    return parser


def export_parser() -> ArgumentParser:
    parser = command_parser(
        "tsda data export",
        "a flow table (--data.*) to a pcap of synthetic packets (valid "
        "headers, zero payload bytes) and OUT.rules.csv to label them again on import",
    )
    parser.add_argument("--out", type=str, required=True, help="the pcap file to write")
    parser.add_argument("--protocol", type=str, default="tcp", help="tcp or udp, for flows without a protocol column")
    parser.add_argument(
        "--protocol_column",
        type=str | None,
        default=None,
        help="column naming each flow's protocol (TCP/UDP or 6/17); default: `protocol` if the file has it",
    )
    parser.add_argument(
        "--start_column",
        type=str | None,
        default=None,
        help="column of each flow's unix start time; default: `start_timestamp` if the file has it",
    )
    parser.add_argument(
        "--start_time",
        type=float,
        default=START_TIME,
        help="unix time of the first flow's start where no start column is used",
    )
    parser.add_argument(
        "--flow_gap", type=float, default=FLOW_GAP, help="seconds between flow starts without a start column"
    )
    parser.add_argument("--client_net", type=str, default="10.0.0.0/8", help="IPv4 network of the clients' addresses")
    parser.add_argument("--server_net", type=str, default="192.0.2.0/24", help="IPv4 network of the servers' addresses")
    parser.add_argument("--server_port", type=int, default=443)
    parser.add_argument("--time_resolution", type=str, default="us", help="us (classic pcap) or ns (nanosecond pcap)")
    add_data_arguments(parser)
    return parser


def run_describe(cfg: Namespace) -> None:
    dm = build_datamodule(cfg)
    h = dm.hparams
    report = describe(dm.raw_table(cfg.max_packets), h.min_packets, h.min_class_size, h.n_packets)
    source = h.path or "synthetic"
    print(format_report(report, source), flush=True)
    if cfg.json:
        write_json_atomic(cfg.json, {"source": source, **report})


def run_import(cfg: Namespace) -> None:
    if cfg.invalid_packets not in ("error", "skip"):
        raise TsdaError(f"--invalid_packets must be error or skip, got {cfg.invalid_packets!r}")
    if Path(cfg.out).suffix.lower() != ".parquet":
        raise TsdaError(f"--out {cfg.out}: the flow table is written as Parquet: name it *.parquet")
    rules = FlowRules(
        cfg.idle_timeout, cfg.active_timeout, cfg.max_packets, cfg.keep_zero_payload, cfg.keep_retransmissions
    )
    report = import_captures(
        cfg.captures,
        cfg.out,
        rules,
        Labeller(cfg.label, cfg.unmatched),
        skip_invalid=cfg.invalid_packets == "skip",
        progress=cfg.progress,
    )
    for warning in report.warnings:
        print(f"tsda: warning: {warning}", file=sys.stderr)
    skipped = {k: v for k, v in report.left_out.items() if v}
    print(
        f"read {report.packets} packets of {report.files} capture(s) in {report.seconds:.1f} s "
        f"({report.packets_per_second:,.0f} packets/s); wrote {report.flows} flows to {cfg.out}"
        + (f"; left out: {skipped}" if skipped else ""),
        flush=True,
    )


def _column(path: str | None, flag: str, name: str | None, default: str, rows: np.ndarray) -> np.ndarray | None:
    """The values of column `name` (or `default` when the file has it) for file `rows`;
    None when no column is used. A named column that is missing is an error."""
    if path is None:
        return None
    names = pq.read_schema(path).names
    if name is not None and name not in names:
        raise TsdaError(f"{flag} {name!r}: {path} has no such column (columns: {', '.join(names)})")
    use = name or (default if default in names else None)
    return None if use is None else pq.read_table(path, columns=[use]).column(use).to_numpy(zero_copy_only=False)[rows]


def _protocols(values: np.ndarray | None, default: str, n: int, flag: str) -> np.ndarray:
    """`(N,)` bool, True for TCP."""
    names = {"tcp": True, "6": True, "udp": False, "17": False}
    if values is None:
        if default.lower() not in ("tcp", "udp"):
            raise TsdaError(f"--protocol must be tcp or udp, got {default!r}")
        return np.full(n, default.lower() == "tcp")
    text = np.char.lower(values.astype(str))
    bad = ~np.isin(text, list(names))
    if bad.any():
        raise TsdaError(f"{flag}: row {int(np.flatnonzero(bad)[0])} holds {values[bad][0]!r}, not TCP/UDP (or 6/17)")
    return np.array([names[t] for t in text.tolist()], dtype=bool)


def run_export(cfg: Namespace) -> None:
    if cfg.time_resolution not in ("us", "ns"):
        raise TsdaError(f"--time_resolution must be us or ns, got {cfg.time_resolution!r}")
    out = Path(cfg.out)
    if not out.parent.is_dir():
        raise TsdaError(f"--out {out}: the folder {out.parent} does not exist")
    dm = build_datamodule(cfg)
    path = dm.hparams.path
    width = (
        64
        if path is None
        else max(
            1,
            int(
                pc.max(pc.list_value_length(pq.read_table(path, columns=[dm.hparams.sizes_column]).column(0))).as_py()
                or 1
            ),
        )
    )
    table: FlowTable = dm.raw_table(width)
    rows = table.meta.get(FILE_ROW, np.arange(len(table)))
    protocol_values = _column(path, "--protocol_column", cfg.protocol_column, "protocol", rows)
    tcp = _protocols(
        protocol_values, cfg.protocol, len(table), f"--protocol_column {cfg.protocol_column or 'protocol'}"
    )
    starts = _column(path, "--start_column", cfg.start_column, "start_timestamp", rows)
    start_ns = (
        spaced_starts(len(table), cfg.start_time, cfg.flow_gap)
        if starts is None
        else np.rint(np.asarray(starts, dtype=np.float64) * 1e9).astype(np.int64)
    )
    n, rules = export_table(
        table, out, tcp, start_ns, cfg.client_net, cfg.server_net, cfg.server_port, cfg.time_resolution == "ns"
    )
    print(
        f"wrote {len(table)} flows ({n} packets, synthetic: valid headers, zero payload bytes) to {out}; "
        f"labels: --label {rules}",
        flush=True,
    )


def _rules_file(cfg: Namespace) -> bool:
    return cfg.label not in ("folder", "none") and not str(cfg.label).startswith("file:")


#: options that apply to some input only, per command
RULES: dict[str, list[Applies]] = {
    "describe": data_rules(),
    "import": [Applies(("unmatched",), _rules_file, "applies to --label RULES.csv only")],
    "export": [
        *data_rules(),
        Applies(
            ("protocol_column", "start_column"),
            lambda cfg: cfg.data.path is not None,
            "names a column of a flow file: it needs --data.path FILE, not the embedded dataset",
        ),
        Applies(("protocol",), lambda cfg: cfg.protocol_column is None, "does not apply with --protocol_column"),
        Applies(
            ("start_time", "flow_gap"),
            lambda cfg: cfg.start_column is None,
            "spaces flows without a start column: it does not apply with --start_column",
        ),
    ],
}
PARSERS = {"describe": describe_parser, "import": import_parser, "export": export_parser}
RUNS = {"describe": run_describe, "import": run_import, "export": run_export}


def main(argv: list[str] | None = None) -> None:
    """`tsda data describe | import | export [options]`."""
    picked = pick_subcommand("data", list(sys.argv[1:] if argv is None else argv), PARSERS, _HELP)
    if picked is None:
        return
    name, parser, rest = picked
    cfg = parser.parse_args(rest)
    refuse_inapplicable(parser, cfg, RULES[name])
    RUNS[name](cfg)
