"""What a flow source holds, before and after curation (`tsda data describe`): flows per
class (raw, with more than `min_packets` packets, kept by curation), flow lengths, size and
inter-arrival time quantiles and the direction share."""

from __future__ import annotations

from typing import Any

import numpy as np

from tsda.data.curation import curate
from tsda.data.table import FlowTable

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


def describe(table: FlowTable, min_packets: int = 10, min_class_size: int = 100, n_packets: int = 20) -> dict[str, Any]:
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
        "curation": {"min_packets": min_packets, "min_class_size": min_class_size, "n_packets": n_packets},
        "per_class": per_class,
        "raw": summarize(table),
        "curated": summarize(curated) if curated is not None else None,
    }


def format_report(report: dict[str, Any], source: str) -> str:
    """The human-readable text of a `describe` report."""
    c = report["curation"]
    lines = [
        f"source: {source}",
        (
            f"flows per class (long = more than {c['min_packets']} packets; curated = classes "
            f"with more than {c['min_class_size']} long flows, first {c['n_packets']} packets)"
        ),
    ]
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
        lines.append(
            f"{stage}: {s['flows']} flows, {s['classes']} classes, "
            f"upstream (client to server) share of packets {share_text}"
        )
        for key in ("packets", "stored_packets", "size_bytes", "size_bytes_up", "size_bytes_down", "iat_seconds"):
            lines.append(f"  {key:<16} {_format_quantiles(s[key])}")
    return "\n".join(lines)


def _format_quantiles(q: dict[str, float]) -> str:
    if not q:
        return "(none)"
    return "  ".join(f"{k} {v:.4g}" for k, v in q.items())
