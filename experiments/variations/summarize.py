"""What `tsda campaign report` leaves out of the variations study, per condition: seeds, epochs
actually trained, wall seconds of a run, and the seconds of its variation pool.

    python experiments/variations/summarize.py runs/variations [--seeds 0-4]
"""

from __future__ import annotations

import argparse
import json

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("campaign", help="the campaign's --out directory")
    parser.add_argument("--seeds", default=None, help="e.g. 0-4 (default: all)")
    args = parser.parse_args()
    runs = pd.read_parquet(f"{args.campaign}/results.parquet")
    runs = runs[runs["status"] == "ok"]
    if args.seeds:
        low, high = (int(v) for v in args.seeds.split("-"))
        runs = runs[runs["seed"].between(low, high)]
    runs = runs.assign(pool_seconds=[json.loads(m).get("augment_pool_seconds", float("nan"))
                                     for m in runs["metrics_json"]])
    rows = []
    for condition, g in runs.groupby("condition"):
        rows.append({"condition": condition, "n": len(g), "seeds": ",".join(map(str, sorted(g["seed"]))),
                     "wF1": g["test_weighted_f1"].mean(), "std": g["test_weighted_f1"].std(),
                     "epochs": f"{int(g['epochs'].min())}-{int(g['epochs'].max())}",
                     "run s": g["seconds"].mean(), "pool s": g["pool_seconds"].mean()})
    table = pd.DataFrame(rows).sort_values("wF1", ascending=False)
    print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |")
    print(f"\n{len(runs)} runs, {runs['seconds'].sum():,.0f} run-seconds in all")


if __name__ == "__main__":
    main()
