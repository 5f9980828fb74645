"""Tables of experiments/handcrafted/RESULTS.md from the converged campaign directory.

    python experiments/handcrafted/summarize.py runs/handcrafted-10pct \
        --previous OLD_RESULTS.md --with runs/generative:transformer_10pct_t09,cgan_latent

Writes `tsda campaign report`'s report.md (with the paired tests against `--control`) and
prints, per condition: the converged mean and std of test weighted F1, the epochs actually
trained (min-max over seeds), mean run seconds, the difference to the same-steps control
`--control`, and, from `--previous` (a RESULTS.md whose first table is the 5-epoch reading,
e.g. `git show 50c00ad:experiments/handcrafted/RESULTS.md`), that reading's mean, its
difference to the control and the rank change.

`--seeds 0-3` keeps those seeds only (a campaign still running); its results and report go
to `OUT/seeds_0-3/`. `--with DIR:a,b` adds conditions of another campaign run under the same protocol (same base
data, split, fraction, seeds) and writes `OUT/with_other/` (results + `tsda campaign report`
of the union over the seeds every condition finished). The two campaigns must agree on the
conditions they share, seed by seed: the script refuses otherwise, so a protocol that
differs cannot slip into one ranking.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tsda.campaign import parse_seeds, read_results, select_runs, write_report, write_subset_report
from tsda.metrics import stats


# The paper's MIRAGE19 deltas over No Aug with the sampler, weighted-F1 points, 30 seeds
# (../shared/reference/paper.md, "Results on MIRAGE19").
PAPER_MIRAGE19 = {"translation": 4.76, "wrap": 4.35, "permutation": 4.13, "bernoulli_mask": 3.09, "cutmix": 2.89,
                  "window_mask": 2.11, "spike_noise": 1.87, "packet_loss": 1.07, "gaussian_wrapup": 0.91,
                  "constant_wrapup": 0.82, "sine_wrapup": 0.49, "no_aug_no_sampler": 0.42, "gaussian_noise": 0.41,
                  "interpolation": 0.41, "flip": -0.53}


def previous_means(path: Path) -> pd.Series:
    """Condition -> mean of the first markdown table (`| condition | n | mean | ...`) in `path`."""
    means = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\| ([a-z_]+) \| \d+ \| ([0-9.]+) \|", line)
        if m:
            means.setdefault(m.group(1), float(m.group(2)))
        elif means and not line.startswith("|"):
            break
    return pd.Series(means, dtype=float)


def union(results: pd.DataFrame, other: pd.DataFrame, conditions: list[str]) -> pd.DataFrame:
    """`results` plus `conditions` of `other`, after checking the shared conditions agree per seed."""
    clash = sorted(set(conditions) & set(results.condition))
    if clash:
        raise SystemExit(f"--with: {clash} are conditions of this campaign already")
    keys = ["condition", "seed"]
    both = results[[*keys, "test_weighted_f1"]].merge(other[[*keys, "test_weighted_f1"]], on=keys)
    if both.empty:
        raise SystemExit("--with: no shared (condition, seed) to check the protocol on")
    gap = float((both.test_weighted_f1_x - both.test_weighted_f1_y).abs().max())
    if gap > 1e-6:
        raise SystemExit(f"--with: shared runs differ by up to {gap:.4f} weighted F1: not the same protocol")
    print(f"protocol check: {len(both)} shared (condition, seed) runs of {both.condition.nunique()} conditions "
          f"identical (max gap {gap:.1e})")
    return pd.concat([results, other[other.condition.isin(conditions)]], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--control", default="no_aug_batch_b")
    parser.add_argument("--previous", default=None, help="RESULTS.md holding the 5-epoch table")
    parser.add_argument("--with", dest="other", default=None, help="DIR:cond1,cond2 of another campaign")
    parser.add_argument("--seeds", default=None, help="only these seeds ('0-3'); the report goes to OUT/seeds_<a-b>/")
    args = parser.parse_args()
    out = Path(args.out)
    results = read_results(out)
    into = f"seeds_{args.seeds}" if args.seeds else "."
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds else None
    if seeds:
        results = select_runs(results, seeds=seeds)
    runs = stats.ok_runs(results)
    summary = stats.summarize(results, reference=args.control)
    by = runs.groupby("condition")
    table = summary[["n", "mean", "std"]].assign(
        macro=by.test_macro_f1.mean(), run_s=by.seconds.mean(),
        epochs=[f"{int(lo)}-{int(hi)}" for lo, hi in zip(by.epochs.min()[summary.index], by.epochs.max()[summary.index])])
    table["vs control"] = summary["delta"]
    table["rank"] = table["mean"].rank(ascending=False).astype(int)
    if args.previous:
        old = previous_means(Path(args.previous))
        table["5-epoch mean"] = old.reindex(table.index)
        table["5-epoch vs control"] = table["5-epoch mean"] - old.get(args.control, np.nan)
        table["5-epoch rank"] = table["5-epoch mean"].rank(ascending=False).astype("Int64")
    table = table.sort_values("mean", ascending=False)
    print(stats.markdown_table(table))
    print(f"\n{len(runs)} runs, {runs.seconds.sum():.0f} run-seconds; epochs trained "
          f"{int(runs.epochs.min())}-{int(runs.epochs.max())} (mean {runs.epochs.mean():.1f})")
    from scipy.stats import spearmanr

    paper = pd.Series(PAPER_MIRAGE19)
    ours = (table["mean"] - table.loc["no_aug", "mean"]).reindex(paper.index) * 100
    rho, p = spearmanr(paper, ours)
    print(f"\nSpearman rank correlation with the paper's MIRAGE19 deltas over No Aug ({len(paper)} conditions): "
          f"rho = {rho:.3f}, p = {p:.2g}")
    print(stats.markdown_table(pd.DataFrame({"paper MIRAGE19": paper, "here (10 % D1)": ours}).rename_axis("condition"), 2))
    report = (write_subset_report(out, results, into, {"seeds": seeds}, control=args.control) if args.seeds
              else write_report(out, control=args.control))
    print(f"report: {report}")
    if args.other:
        folder, names = args.other.split(":")
        other = read_results(folder)
        combined = union(results, stats.ok_runs(other), names.split(","))
        combined = select_runs(combined, complete=True)
        subset = {"seeds": seeds, "complete": True, "with": args.other}
        path = write_subset_report(out, combined, str(Path(into, "with_other")), subset, control=args.control)
        print(f"\nwith {names} over seeds {sorted(int(s) for s in combined.seed.unique())}: {path}")


if __name__ == "__main__":
    main()
