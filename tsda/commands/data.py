"""`tsda data describe`: what a flow source holds, before and after curation.

    tsda data describe                                   # the embedded synthetic dataset
    tsda data describe --data.synthetic_scale 0.1 --data.synthetic_apps 8
    tsda data describe --data.path ../shared/data/fgnet/d1.parquet --data.invalid_rows drop --json d1.json

Prints flows per class (raw, with more than `--data.min_packets` packets, and kept by
curation), a flow length summary, size and inter-arrival time quantiles and the direction
share; `--json OUT` writes the same numbers as JSON (atomically). The `--data.*` options
are `tsda fit`'s (`FlowDataModule`); `--max_packets` packets are read per flow (more than
`--data.n_packets`, to show how long flows really are).
"""

from __future__ import annotations

import sys

from jsonargparse import ArgumentParser

from tsda.commands.options import add_data_arguments, build_datamodule, command_parser
from tsda.data.describe import describe, format_report
from tsda.runs import write_json_atomic

_HELP = ("usage: tsda data describe [options]\n\ncommands:\n  describe  flows per class, lengths, "
         "size and IAT summaries of a source (`tsda data describe --help`)")


def build_parser() -> ArgumentParser:
    parser = command_parser("tsda data describe", __doc__)
    parser.add_argument("--max_packets", type=int, default=64, help="packets read per flow")
    parser.add_argument("--json", type=str | None, default=None, help="also write the report as JSON to this file")
    add_data_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """`tsda data describe [options]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_HELP)
        if not argv:
            raise SystemExit(2)
        return
    if argv[0] != "describe":
        raise ValueError(f"unknown `tsda data` command {argv[0]!r}; the only one is `describe`")
    cfg = build_parser().parse_args(argv[1:])
    dm = build_datamodule(cfg)
    h = dm.hparams
    report = describe(dm.raw_table(cfg.max_packets), h.min_packets, h.min_class_size, h.n_packets)
    source = h.path or "synthetic"
    print(format_report(report, source), flush=True)
    if cfg.json:
        write_json_atomic(cfg.json, {"source": source, **report})
