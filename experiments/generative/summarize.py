"""Tables of experiments/generative/RESULTS.md from a campaign directory.

    python experiments/generative/summarize.py runs/generative [--key translation,no_aug_batch_b,...]

Writes `DIR/key/` (the key conditions' runs over the seeds every one of them finished, with
`tsda campaign report`'s report.md, CD chart and per-class heatmap) and prints: every
condition's mean/std over the seeds it has (n), epochs actually trained, run seconds,
pool seconds, and the latent geometry of the test split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tsda.campaign import read_results, select_runs, write_subset_report
from tsda.metrics import stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--key", default="translation,no_aug_batch_b,cgan_latent,diffusion_latent")
    parser.add_argument("--reference", default="translation")
    args = parser.parse_args()
    out = Path(args.out)
    results = read_results(out)
    runs = stats.ok_runs(results)
    rows = []
    for condition, g in runs.groupby("condition"):
        rows.append({"condition": condition, "n": len(g), "seeds": ",".join(str(int(s)) for s in sorted(g.seed)),
                     "wF1 mean": g.test_weighted_f1.mean(), "wF1 std": g.test_weighted_f1.std(ddof=1),
                     "mF1 mean": g.test_macro_f1.mean(), "epochs": f"{int(g.epochs.min())}-{int(g.epochs.max())}",
                     "run s": g.seconds.mean(),
                     "pool s": g["augment_pool_seconds"].mean() if "augment_pool_seconds" in g else float("nan"),
                     "silhouette": g.latent_silhouette.mean(), "margin": g.latent_margin.mean()})
    table = pd.DataFrame(rows).sort_values("wF1 mean", ascending=False)
    ref = table.set_index("condition").loc[args.reference, "wF1 mean"]
    table.insert(5, "delta vs ref", table["wF1 mean"] - ref)
    print(stats.markdown_table(table.set_index("condition")))
    print(f"\nrun-seconds in all: {runs.seconds.sum():.0f} over {len(runs)} runs")
    key = args.key.split(",")
    sub = select_runs(results, conditions=key, complete=True)
    path = write_subset_report(out, sub, "key", {"conditions": key, "complete": True}, reference=args.reference)
    print(f"\nkey conditions over seeds {sorted(int(s) for s in sub.seed.unique())}: {path}")


if __name__ == "__main__":
    main()
