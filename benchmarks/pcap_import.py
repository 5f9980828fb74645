"""Capture import speed and memory: packets per second of `tsda data import`'s engine on
generated captures of two lengths, peak memory of each (it should not grow with the length),
and, when installed, the same capture through nfstream and dpkt for comparison.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/pcap_import.py            # 2M and 4M packets
    python benchmarks/pcap_import.py --packets 500000 2000000 --engines tsda

The captures are written by tsda's own exporter (`tsda.data.capture.export.write_pcap`):
flows of the embedded synthetic dataset (real-looking sizes, directions and gaps), TCP with
handshakes, one flow starting every `--flow-gap` seconds. A flow stays in memory until its
idle timeout (120 s) has passed after its last packet, so after about two minutes of capture
the number of flows held is steady: with the default gap (20 ms) both lengths are past that
point, and the import's memory should not differ between them.
Each import runs in its own process; its peak resident memory (Linux's VmHWM) is printed with
the resident memory right before the import (the libraries), so the difference is the
import's own. nfstream runs with one meter process and payload accounting
(`accounting_mode=3`, `splt_analysis=64`, no DPI); dpkt parses every packet (Ethernet, IP,
TCP/UDP) without building flows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time


def status(field):  # kB of /proc/self/status's field (VmHWM: peak since exec; VmRSS: now)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


engine, path = sys.argv[1], sys.argv[2]
if engine == "tsda":
    from tsda.data.capture.importer import import_captures
elif engine == "nfstream":
    from nfstream import NFStreamer
else:
    import dpkt
base = status("VmRSS")
t = time.perf_counter()
if engine == "tsda":
    report = import_captures([path], path + ".parquet", progress=False)
    packets, flows = report.packets, report.flows
elif engine == "nfstream":
    flows = packets = 0
    for f in NFStreamer(source=path, splt_analysis=64, statistical_analysis=False, n_dissections=0,
                        accounting_mode=3, n_meters=1):
        flows += 1
        packets += f.bidirectional_packets
else:
    packets = flows = 0
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            l4 = dpkt.ethernet.Ethernet(buf).data.data
            packets += 1
            _ = (l4.sport, l4.dport, len(l4.data))
seconds = time.perf_counter() - t
print(json.dumps({"packets": packets, "flows": flows, "seconds": seconds,
                  "peak_mb": status("VmHWM") / 1024, "base_mb": base / 1024}))
"""


def make_capture(path: Path, packets: int, flow_gap: float, seed: int) -> int:
    """Write a capture of about `packets` packets; returns the number written."""
    from tsda.data.capture.export import write_pcap
    from tsda.data.synthetic import make_synthetic

    table = make_synthetic(scale=0.5, seed=seed)
    per_flow = float(table.lengths.mean()) + 3  # data packets and the handshake
    n = int(packets / per_flow)
    rows = np.arange(n) % len(table)
    start_ns = 1_700_000_000_000_000_000 + (np.arange(n) * flow_gap * 1e9).astype(np.int64)
    return write_pcap(
        path,
        table.sizes[rows],
        table.directions[rows],
        table.times[rows],
        table.lengths[rows],
        np.ones(n, dtype=bool),
        start_ns,
    )


def run(engine: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, engine, str(path)], capture_output=True, text=True, check=False)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, nargs="+", default=[2_000_000, 4_000_000])
    parser.add_argument("--engines", nargs="+", default=["tsda", "nfstream", "dpkt"])
    parser.add_argument("--flow-gap", type=float, default=0.02, help="seconds between flow starts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.packets:
            path = Path(tmp) / f"cap{target}.pcap"
            t = time.perf_counter()
            written = make_capture(path, target, args.flow_gap, args.seed)
            print(
                f"generated {written} packets ({path.stat().st_size / 2**20:.0f} MiB) in "
                f"{time.perf_counter() - t:.1f} s",
                flush=True,
            )
            for engine in args.engines:
                r = run(engine, path)
                rows.append((engine, written, r))
                print(engine, written, r, flush=True)
            for suffix in ("", ".parquet"):
                Path(str(path) + suffix).unlink(missing_ok=True)
    print("\n| engine | packets | seconds | packets/s | flows | peak MB | of which the import |")
    print("|---|---|---|---|---|---|---|")
    for engine, written, r in rows:
        if "error" in r:
            print(f"| {engine} | {written} | - | - | - | - | not run: {r['error']} |")
            continue
        print(
            f"| {engine} | {r['packets']} | {r['seconds']:.2f} | {r['packets'] / r['seconds']:,.0f} | {r['flows']} "
            f"| {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} |"
        )
    tsda = [r for e, _, r in rows if e == "tsda" and "error" not in r]
    if len(tsda) >= 2:
        print(
            f"\npeak memory of the import, longest / shortest capture: "
            f"{(tsda[-1]['peak_mb'] - tsda[-1]['base_mb']) / max(tsda[0]['peak_mb'] - tsda[0]['base_mb'], 1):.2f}; "
            f"packets/s longest: {tsda[-1]['packets'] / tsda[-1]['seconds']:,.0f}"
        )


if __name__ == "__main__":
    main()
