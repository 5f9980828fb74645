"""The table of experiments/generators/RESULTS.md from `tsda evaluate` outputs.

    python experiments/generators/summarize.py NAME=DIR/fidelity.json [NAME=...]

One row per generator: converged TSTR (mean, std, per seed, epochs trained), its ratio to
TRTR, the GB and GRU discriminative scores, the two features that give the flows away most
(GB score per feature and packet position), the size and length W1 (overall, mean per
class), latent precision / recall / coverage / Frechet distance in the guide's space and the
input-space memorisation (share of synthetic flows closer to a training flow than the 5th
percentile of test flows; exact copies).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def giveaways(by_feature: dict[str, Any], top: int = 2) -> str:
    """The `top` features (feature[position]) of the per-feature GB scores, with their score."""
    return ", ".join(f"{t['feature']} ({t['score']:.2f})" for t in by_feature["top"][:top])


def row(name: str, f: dict[str, Any]) -> str:
    t, m, lat, mem = f["tstr"], f["marginals"], f["latent"], f["memorisation_input"]
    seeds = ", ".join(f"{s['weighted_f1']:.4f}" for s in t["tstr"]["seeds"])
    cells = [name, f"{t['tstr']['mean']['weighted_f1']:.4f} ± {t['tstr']['std']['weighted_f1']:.4f}", seeds,
             str(t["tstr"]["epochs"]), f"{t['ratio']:.3f}", f"{f['discriminative']['score']:.3f}",
             f"{f['discriminative_gru']['score']:.3f}", giveaways(f["discriminative_by_feature"]),
             f"{m['overall']['size']['w1']:.4f} / {m['mean_per_class']['size']['w1']:.4f}",
             f"{m['overall']['length']['w1']:.4f} / {m['mean_per_class']['length']['w1']:.4f}",
             f"{lat['precision']:.2f} / {lat['recall']:.2f} / {lat['coverage']:.2f}", f"{lat['frechet']:.1f}",
             f"{mem['share_below_p5']:.3f} ({mem['share_exact_copies']:.3f})"]
    return "| " + " | ".join(cells) + " |"


def main(args: list[str]) -> None:
    print("| generator | TSTR wF1 (3 seeds) | per seed | TSTR epochs | ratio to TRTR | GB disc. | GRU disc. "
          "| top giveaways (GB score) | size W1 overall / per class | length W1 overall / per class "
          "| latent P / R / C | latent FD | mem. share < p5 (exact copies) |")
    print("|" + "---|" * 13)
    trtr = set()
    for arg in args:
        name, path = arg.split("=", 1)
        f = json.loads(Path(path).read_text())
        trtr.add(f"{f['tstr']['trtr']['mean']['weighted_f1']:.4f} ± {f['tstr']['trtr']['std']['weighted_f1']:.4f}")
        print(row(name, f))
    print(f"\nTRTR: {', '.join(sorted(trtr))}")


if __name__ == "__main__":
    main(sys.argv[1:])
