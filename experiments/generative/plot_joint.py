"""Loss curves of a joint run (`tsda.joint.module.JointModule`) from its `metrics.csv`.

    python experiments/generative/plot_joint.py runs/generative/runs/joint/seed0 \\
        experiments/generative/results/joint_curves.png [--reference runs/generative/runs/no_aug_batch_b/seed0]

Panels: validation weighted F1 per epoch (with a reference run's, e.g. the same-steps
control), the classifier's cross-entropy and the weight of generated flows, the GAN's
generator and critic losses, and the classifier's accuracy on generated flows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tsda.figures import pyplot, save_figure


def per_epoch(run: Path) -> pd.DataFrame:
    """The run's epoch-level metrics (one row per epoch, NaN where a metric was not logged)."""
    frame = pd.read_csv(run / "metrics.csv")
    return frame.groupby("epoch").mean(numeric_only=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--reference", type=Path, default=None)
    args = parser.parse_args()
    joint = per_epoch(args.run)
    plt = pyplot()
    panels = [("val_weighted_f1", "validation weighted F1"), ("train_ce", "classifier cross-entropy"),
              ("train_w_generated", "weight of generated flows"), ("train_loss_g", "generator loss"),
              ("train_loss_d", "critic loss"), ("val_generated_accuracy", "classifier accuracy on generated flows")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, (key, title) in zip(axes.flat, panels):
        if key in joint:
            ax.plot(joint.index, joint[key], "o-", ms=3, label="joint")
        if key == "val_weighted_f1" and args.reference is not None:
            ref = per_epoch(args.reference)
            ax.plot(ref.index, ref["val_weighted_f1"], "s--", ms=3, label=args.reference.parent.name)
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    print(f"wrote {save_figure(fig, args.out, dpi=100)}")


if __name__ == "__main__":
    main()
