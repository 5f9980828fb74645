"""`tsda data describe [SOURCE]`: what a flow source holds, before and after curation.

    tsda data describe                          # the embedded synthetic dataset
    tsda data describe synthetic --synthetic-scale 0.1 --synthetic-apps 8
    tsda data describe ../shared/data/fgnet/d1.parquet --invalid-rows drop --json d1.json

Prints flows per class (raw, with more than `--min-packets` packets, and kept by curation),
a flow length summary, size and inter-arrival time quantiles and the direction share;
`--json OUT` writes the same numbers as JSON (atomically).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from tsda.data.curation import curate
from tsda.data.sources import ParquetColumns, read_parquet
from tsda.data.table import FlowTable
from tsda.runs import write_json_atomic

#: quantiles every summary reports
QUANTILES: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def quantiles(values: np.ndarray) -> dict[str, float]:
    """`{"q0": min, "q5": ..., "q50": median, ..., "q100": max}` of `values` plus the mean
    (`{}` for no values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    qs = np.quantile(values, QUANTILES)
    out = {f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)}
    out["mean"] = float(values.mean())
    return out


def summarize(table: FlowTable) -> dict[str, Any]:
    """Summary of the stored packets of `table`.

    Keys: `flows`, `classes`, `packets` (whole-flow packet counts), `stored_packets`
    (`lengths`), `size_bytes` (real packets), `size_bytes_up` / `size_bytes_down` (client
    to server / server to client), `iat_seconds` (gaps between consecutive stored packets
    of a flow), `upstream_share` (fraction of real packets client to server).
    """
    real = np.arange(table.max_packets)[None, :] < table.lengths[:, None]  # (N, P)
    up = real & (table.directions == 0)  # (N, P)
    gaps = np.diff(table.times, axis=1)  # (N, P-1)
    gap_real = real[:, 1:]  # (N, P-1) both packets real
    n_real = int(real.sum())
    return {
        "flows": table.n_flows,
        "classes": len(table.class_names),
        "packets": quantiles(table.packets),
        "stored_packets": quantiles(table.lengths),
        "size_bytes": quantiles(table.sizes[real]),
        "size_bytes_up": quantiles(table.sizes[up]),
        "size_bytes_down": quantiles(table.sizes[real & ~up]),
        "iat_seconds": quantiles(gaps[gap_real]),
        "upstream_share": float(up.sum() / n_real) if n_real else None,
    }


def describe(
    table: FlowTable, min_packets: int = 10, min_class_size: int = 100, n_packets: int = 20
) -> dict[str, Any]:
    """Per-class counts through curation and summaries of the raw and curated flows.

    `per_class[name]` = `{"raw": flows, "long": flows with more than min_packets packets,
    "curated": flows kept by curation (0 when the class is dropped)}`; `curated` is None
    when curation keeps nothing.
    """
    long_counts = table.take(table.packets > min_packets).class_counts()  # (K,)
    try:
        curated: FlowTable | None = curate(table, min_packets, min_class_size, n_packets)
    except ValueError:
        curated = None
    kept = dict(zip(curated.class_names, curated.class_counts().tolist())) if curated else {}
    per_class = {
        name: {"raw": int(raw), "long": int(long), "curated": int(kept.get(name, 0))}
        for name, raw, long in zip(table.class_names, table.class_counts(), long_counts)
    }
    return {
        "curation": {"min_packets": min_packets, "min_class_size": min_class_size,
                     "n_packets": n_packets},
        "per_class": per_class,
        "raw": summarize(table),
        "curated": summarize(curated) if curated is not None else None,
    }


def format_report(report: dict[str, Any], source: str) -> str:
    """The human-readable text of a `describe` report."""
    c = report["curation"]
    lines = [f"source: {source}",
             f"flows per class (long = more than {c['min_packets']} packets; curated = classes "
             f"with more than {c['min_class_size']} long flows, first {c['n_packets']} packets)"]
    width = max([len(n) for n in report["per_class"]] + [5])
    lines.append(f"  {'class':<{width}} {'raw':>8} {'long':>8} {'curated':>8}")
    for name, n in report["per_class"].items():
        lines.append(f"  {name:<{width}} {n['raw']:>8} {n['long']:>8} {n['curated']:>8}")
    for stage in ("raw", "curated"):
        s = report[stage]
        if s is None:
            lines.append(f"{stage}: curation keeps no flow")
            continue
        share = s["upstream_share"]
        share_text = "n/a" if share is None else f"{share:.3f}"
        lines.append(f"{stage}: {s['flows']} flows, {s['classes']} classes, "
                     f"upstream (client to server) share of packets {share_text}")
        for key in ("packets", "stored_packets", "size_bytes", "size_bytes_up",
                    "size_bytes_down", "iat_seconds"):
            lines.append(f"  {key:<16} {_format_quantiles(s[key])}")
    return "\n".join(lines)


def _format_quantiles(q: dict[str, float]) -> str:
    if not q:
        return "(none)"
    return "  ".join(f"{k} {v:.4g}" for k, v in q.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tsda data describe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", default="synthetic",
                   help="'synthetic' (default) or a tcbench-style Parquet file")
    p.add_argument("--synthetic-scale", type=float, default=1.0, help="synthetic: fraction of MIRAGE19's sizes")
    p.add_argument("--synthetic-apps", type=int, default=20, help="synthetic: number of apps")
    p.add_argument("--seed", type=int, default=0, help="synthetic: seed")
    defaults = ParquetColumns()
    p.add_argument("--label-column", default=defaults.label)
    p.add_argument("--sizes-column", default=defaults.sizes)
    p.add_argument("--directions-column", default=defaults.directions)
    p.add_argument("--times-column", default=defaults.times)
    p.add_argument("--packets-column", default=defaults.packets,
                   help="whole-flow packet counts ('' = use the list lengths)")
    p.add_argument("--invalid-rows", choices=("error", "drop"), default="error",
                   help="malformed rows: stop at the first (error) or leave them out (drop)")
    p.add_argument("--max-packets", type=int, default=64, help="packets read per flow")
    p.add_argument("--min-packets", type=int, default=10)
    p.add_argument("--min-class-size", type=int, default=100)
    p.add_argument("--n-packets", type=int, default=20)
    p.add_argument("--json", metavar="OUT", default=None, help="also write the report as JSON")
    return p


def load_source(args: argparse.Namespace) -> FlowTable:
    """The raw table of `args.source` (synthetic or Parquet)."""
    if args.source == "synthetic":
        from tsda.data.synthetic import make_synthetic

        return make_synthetic(n_apps=args.synthetic_apps, scale=args.synthetic_scale,
                              seed=args.seed, max_packets=args.max_packets)
    columns = ParquetColumns(args.label_column, args.sizes_column, args.directions_column,
                             args.times_column, args.packets_column or None)
    return read_parquet(args.source, columns, max_packets=args.max_packets,
                        invalid_rows=args.invalid_rows)


def main(argv: list[str] | None = None) -> None:
    """`tsda data describe [SOURCE] [options]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: tsda data describe [SOURCE] [options]\n\ncommands:\n  describe  flows per class, "
              "lengths, size and IAT summaries of a source (`tsda data describe --help`)")
        if not argv:
            raise SystemExit(2)
        return
    if argv[0] == "describe":
        argv = argv[1:]
    else:
        build_parser().error(f"unknown `tsda data` command {argv[0]!r}; the only one is `describe`")
    args = build_parser().parse_args(argv)
    report = describe(load_source(args), args.min_packets, args.min_class_size, args.n_packets)
    print(format_report(report, args.source), flush=True)
    if args.json:
        write_json_atomic(args.json, {"source": args.source, **report})


if __name__ == "__main__":
    main(["describe", *sys.argv[1:]])
