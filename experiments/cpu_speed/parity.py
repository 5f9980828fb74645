"""Accuracy parity of CPU speed modes: test weighted F1 of the same conditions and seeds run
in fp32 and in faster modes, from recorded campaigns.

    python experiments/cpu_speed/parity.py FP32_CAMPAIGN MODE_CAMPAIGN [MODE_CAMPAIGN ...] \\
        [--names fp32,bf16,fast] [--conditions no_aug_batch_b,wrap] [--seeds 0-4]

Per condition and mode: the mean and standard deviation over the seeds, the mean paired
difference to fp32 with its paired t-test p, and whether that difference lies within the
fp32 seeds' spread (|difference| <= one fp32 standard deviation).
"""

from __future__ import annotations

import argparse

import pandas as pd
from scipy import stats


def scores(campaign: str, conditions: list[str], seeds: range) -> pd.DataFrame:
    """`(condition, seed) -> test weighted F1` of the finished runs of `campaign`."""
    runs = pd.read_parquet(f"{campaign}/results.parquet")
    runs = runs[(runs["status"] == "ok") & runs["condition"].isin(conditions) & runs["seed"].isin(seeds)]
    return runs.set_index(["condition", "seed"])["test_weighted_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("campaigns", nargs="+", help="the fp32 campaign first, then one per mode")
    parser.add_argument("--names", default="fp32,bf16,fast")
    parser.add_argument("--conditions", default="no_aug_batch_b,wrap")
    parser.add_argument("--seeds", default="0-4")
    args = parser.parse_args()
    names = args.names.split(",")[: len(args.campaigns)]
    conditions = args.conditions.split(",")
    low, high = (int(v) for v in args.seeds.split("-"))
    table = pd.DataFrame({n: scores(c, conditions, range(low, high + 1)) for n, c in zip(names, args.campaigns)})
    print(table.unstack(0).round(4).to_string(), "\n")
    print("| condition | mode | n | mean | std | diff vs fp32 | paired p | within fp32 spread |")
    print("|---|---|---|---|---|---|---|---|")
    for condition in conditions:
        rows = table.loc[condition].dropna()
        base = rows[names[0]]
        for name in names:
            diff = (rows[name] - base).mean()
            p = stats.ttest_rel(rows[name], base).pvalue if name != names[0] else float("nan")
            within = "" if name == names[0] else ("yes" if abs(diff) <= base.std() else "no")
            print(f"| {condition} | {name} | {len(rows)} | {rows[name].mean():.4f} | {rows[name].std():.4f} | "
                  f"{diff:+.4f} | {p:.3f} | {within} |")


if __name__ == "__main__":
    main()
