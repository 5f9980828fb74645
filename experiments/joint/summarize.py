"""What the classifier saw in each joint run of a campaign directory, from its metrics.csv.

    python experiments/joint/summarize.py runs/joint [--out experiments/joint/results/signals.md]

Per run: the epoch of the best checkpoint (validation weighted F1) against the first epoch in
which generated flows entered the classifier's loss (`classifier_warmup_epochs +
generator_warmup_epochs`), validation weighted F1 just before that epoch and at its best after
it, and the generated flows' signals averaged over the joint epochs: the classifier's accuracy
on them and its probability of their class (`val_generated_accuracy`, `val_generated_p_class`,
from the EMA generator's fresh flows) and, from the training steps on the one-step flows the
generator is scored on, `train_gen_p_class` and `train_gen_region_distance` (about 1 inside a
class region). Against these, the real validation flows' accuracy (`val_accuracy`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

SIGNALS = ("val_generated_accuracy", "val_generated_p_class", "train_gen_p_class", "train_gen_region_distance")


def epochs_table(run_dir: Path) -> pd.DataFrame:
    """One row per epoch: the mean of every logged column (Lightning's CSV spreads an epoch over rows)."""
    frame = pd.read_csv(run_dir / "metrics.csv")
    return frame.groupby("epoch").mean(numeric_only=True)


def joint_start(run_dir: Path) -> int:
    """The first epoch with generated flows in the classifier's loss, from the run's config."""
    args = json.loads((run_dir / "run_spec.json").read_text())["args"]
    values = dict(zip(args[::2], args[1::2]))
    return int(values.get("--model.init_args.classifier_warmup_epochs", 2)) + int(
        values.get("--model.init_args.generator_warmup_epochs", 2)
    )


def summarize(run_dir: Path) -> dict[str, object]:
    table = epochs_table(run_dir)
    start = joint_start(run_dir)
    f1 = table["val_weighted_f1"].dropna()
    joint = table[table.index >= start]
    best = int(f1.idxmax())
    row: dict[str, object] = {
        "run": f"{run_dir.parent.name} {run_dir.name}",
        "joint from": start,
        "best epoch": best,
        "best before joint": best < start,
        "val wF1 before joint": round(float(f1[f1.index < start].max()), 4) if (f1.index < start).any() else math.nan,
        "val wF1 in joint": round(float(f1[f1.index >= start].max()), 4) if (f1.index >= start).any() else math.nan,
        "val acc (real)": round(float(joint["val_accuracy"].mean()), 3) if len(joint) else math.nan,
    }
    for name in SIGNALS:
        value = joint[name].mean() if name in joint and len(joint) else math.nan
        row[name] = round(float(value), 3)
    return row


def markdown(table: pd.DataFrame) -> str:
    """`table` as a Markdown table (no optional dependency)."""
    rows = [list(table.columns), ["---"] * len(table.columns), *table.astype(str).values.tolist()]
    return "\n".join("| " + " | ".join(map(str, row)) + " |" for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaign", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    runs = sorted(p for p in (args.campaign / "runs").glob("joint*/seed*") if (p / "metrics.json").is_file())
    table = pd.DataFrame([summarize(p) for p in runs])
    text = markdown(table)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
