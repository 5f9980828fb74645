"""`tsda augment list | preview | enlarge`.

    tsda augment list
    tsda augment preview translation --source synthetic --out preview.png
    tsda augment enlarge --source FILE.parquet --augment configs/augment/translation.yaml \\
        --copies 4 --out enlarged.parquet [--seed 0]

`--source` is `synthetic` (the embedded simulator) or a tcbench-style Parquet file; the
flows used are the curated TRAINING split as `FlowDataModule` makes it. `--augment` is
an augmentation name (defaults), or a YAML `class_path`/`init_args` file (combinators too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tsda.augment.base import AugmentContext, Augmentation
from tsda.augment.catalog import AUGMENTATIONS, augmentation_class, build_augmentation, defaults, required
from tsda.augment.generator import GeneratorAugmentation


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="'synthetic' or a tcbench-style Parquet file")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split and the augmentation")
    parser.add_argument("--synthetic-scale", type=float, default=1.0, help="synthetic: fraction of MIRAGE19's size")
    parser.add_argument("--synthetic-apps", type=int, default=20, help="synthetic: number of apps")
    parser.add_argument("--invalid-rows", choices=("error", "drop"), default="error",
                        help="Parquet: stop at, or leave out, malformed rows")
    parser.add_argument("--min-packets", type=int, default=10, help="curation: keep flows with more packets")
    parser.add_argument("--min-class-size", type=int, default=100, help="curation: keep classes with more flows")
    parser.add_argument("--n-packets", type=int, default=20, help="L, packets per flow")


def _datamodule(args: argparse.Namespace):  # -> FlowDataModule
    from tsda.data.datamodule import FlowDataModule

    synthetic = args.source == "synthetic"
    if not synthetic and not Path(args.source).is_file():
        raise FileNotFoundError(f"--source {args.source!r} is neither 'synthetic' nor a file")
    return FlowDataModule(
        path=None if synthetic else args.source, synthetic_scale=args.synthetic_scale,
        synthetic_apps=args.synthetic_apps, invalid_rows=args.invalid_rows,
        min_packets=args.min_packets, min_class_size=args.min_class_size,
        n_packets=args.n_packets, split_seed=args.seed,
    )


def _setup(augmentation: Augmentation, dm, seed: int) -> None:  # dm: FlowDataModule
    """Give the augmentation tree the data's codec and classes (time-based augmentations
    take the data's iat formula). Generator checkpoints are not loaded here: sample them
    with `tsda sample`."""
    context = AugmentContext(device=torch.device("cpu"), class_names=tuple(dm.class_names),
                             generator=torch.Generator().manual_seed(seed), codec=dm.codec)
    for aug in augmentation.walk():
        if isinstance(aug, GeneratorAugmentation):
            raise ValueError(f"--augment: a generator ({aug.ckpt}) cannot enlarge or preview here; "
                             "use tsda sample --ckpt CKPT for generated flows")
        aug.setup(context)


def list_augmentations() -> str:
    """The catalog as a text table: name, family, altered features (probabilities), defaults."""
    rows = [("name", "family", "size", "dir", "iat", "defaults")]
    for name, cls in AUGMENTATIONS.items():
        a = cls.alters
        params = ", ".join([*(f"{k}=<required>" for k in required(cls)),
                            *(f"{k}={v!r}" for k, v in defaults(cls).items())]) or "-"
        rows.append((name, cls.family, f"{a['size']:g}", f"{a['direction']:g}", f"{a['iat']:g}", params))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def preview(args: argparse.Namespace) -> Path:
    """A PNG of `--flows` training flows before and after the augmentation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    augmentation = build_augmentation(args.name)
    dm = _datamodule(args)
    _setup(augmentation, dm, args.seed)
    batch = dm.codec.encode(dm.split_table("train"))
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(batch), generator=g)[: args.flows]
    before = batch.index(pick)
    after = augmentation(before, g)
    fig, axes = plt.subplots(len(pick), 2, figsize=(10, 1.8 * len(pick)), squeeze=False, sharex=True)
    for row, i in enumerate(range(len(pick))):
        for version, (label, shift, color) in zip((before, after), (("before", -0.2, "tab:blue"), ("after", 0.2, "tab:orange"))):
            n = int(version.lengths[i])
            pos = np.arange(n) + shift
            signed = (version.x[i, 0, :n] * version.x[i, 1, :n]).numpy()
            axes[row, 0].bar(pos, signed, width=0.4, color=color, label=label)
            axes[row, 1].plot(np.arange(n), version.x[i, 2, :n].numpy(), "o-", color=color, ms=3, label=label)
        axes[row, 0].set_ylabel(dm.class_names[int(before.labels[i])][:18], fontsize=7)
    axes[0, 0].set_title("size x direction (+ client to server)")
    axes[0, 1].set_title("iat (encoded)")
    axes[0, 1].legend(fontsize=7)
    axes[-1, 0].set_xlabel("packet")
    axes[-1, 1].set_xlabel("packet")
    fig.suptitle(repr(augmentation), fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def enlarge_command(args: argparse.Namespace) -> Path:
    from tsda.augment.enlarge import enlarge_to_parquet

    if args.copies < 1:
        raise ValueError(f"--copies must be >= 1 (augmented copies per training flow), got {args.copies}")
    augmentation = build_augmentation(args.augment)
    dm = _datamodule(args)
    _setup(augmentation, dm, args.seed)
    train = dm.split_table("train")
    out = enlarge_to_parquet(train, dm.codec, augmentation, args.copies, args.out, seed=args.seed)
    print(f"wrote {out}: {len(train)} training flows + {args.copies} copies each "
          f"({len(train) * (args.copies + 1)} rows) with {augmentation!r}")
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="tsda augment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="names, families, altered features and defaults")
    p = sub.add_parser("preview", help="PNG of a few flows before/after an augmentation")
    p.add_argument("name", help=f"one of {', '.join(AUGMENTATIONS)}, or a YAML file")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--flows", type=int, default=4, help="flows to show")
    _source_arguments(p)
    e = sub.add_parser("enlarge", help="training split + K augmented copies as Parquet")
    e.add_argument("--augment", required=True, help="augmentation name or YAML config")
    e.add_argument("--copies", type=int, required=True, help="augmented copies per flow (K)")
    e.add_argument("--out", required=True, help="Parquet file to write")
    _source_arguments(e)
    args = parser.parse_args(argv)
    if args.command == "list":
        print(list_augmentations())
    elif args.command == "preview":
        if args.name not in AUGMENTATIONS and not Path(args.name).is_file():
            augmentation_class(args.name)  # raises, listing the names
        print(f"wrote {preview(args)}")
    else:
        enlarge_command(args)
