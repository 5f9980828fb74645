"""The RandAugment (N, M) of the grid campaign with the best mean validation weighted F1.

    python experiments/autoaugment/pick_randaugment.py runs/autoaugment-rand-grid

Reads the campaign's results (`best_score`: each run's best validation weighted F1; the
grid's runs never test) and prints one line per setting, best first.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tsda.campaign import read_results


def main() -> None:
    results = read_results(Path(sys.argv[1]))
    ok = results[results.status == "ok"]
    table = ok.groupby("condition")["best_score"].agg(["mean", "std", "count"]).sort_values("mean", ascending=False)
    epochs = ok.groupby("condition")["epochs"].agg(["min", "max"])
    for name, row in table.iterrows():
        print(f"{name}: validation wF1 {row['mean']:.4f} +- {row['std']:.4f} over {int(row['count'])} seeds, "
              f"epochs {int(epochs.loc[name, 'min'])}-{int(epochs.loc[name, 'max'])}")
    print(f"chosen: {table.index[0]}")


if __name__ == "__main__":
    main()
