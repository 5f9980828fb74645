"""`tsda augment list | preview | enlarge | search`.

    tsda augment list
    tsda augment preview translation --out preview.png [--data.path FILE.parquet]
    tsda augment enlarge --augment configs/augment/translation.yaml --copies 4 \\
        --out enlarged.parquet --data.path FILE.parquet [--seed 0]
    tsda fit ... --data.path enlarged.parquet --data.split column
    tsda augment search -c experiments/handcrafted/base.yaml --out DIR --trials 16 [--workers 2] \
        [--space configs/search/policy_space.yaml] [--epochs 8] [tsda fit overrides]

`search` (`tsda.commands.search`) finds a TrivialAugment policy with Optuna by the
validation weighted F1 of short `tsda fit` runs and writes it to `DIR/policy.yaml`.

The flows used are the curated splits as `FlowDataModule` makes them from the `--data.*`
options (`tsda fit`'s; without `--data.path`, the embedded synthetic dataset): preview
shows training flows; enlarge writes every flow of the three splits with a stored split
column (`--data.split_column`, default `split`): validation and test flows untouched,
training flows plus `--copies` augmented copies each (columns `augmentation`,
`source_row`: the row of a copy's original in the written file). `tsda fit --data.split
column` trains on it with that split (no copy of a training flow in validation or test).
`--augment` (and preview's NAME) is an augmentation name (defaults) or a YAML
`class_path`/`init_args` file (combinators too); a `generator` augmentation loads its
checkpoint as in training. `--seed` seeds the augmentation draws (the split follows
`--data.split_seed`). `--device` (auto = CUDA when present, cpu, cuda, cuda:N) is where the
augmentation runs (a generator augmentation samples there); the flows are read and written
on the CPU. The draws come from a generator on that device, so a CUDA run draws other
(equally valid) copies than a CPU run of the same seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace

from tsda.augment.base import Augmentation
from tsda.augment.catalog import (
    AUGMENTATIONS,
    augmentation_class,
    build_augmentation,
    defaults,
    required,
)
from tsda.augment.enlarge import enlarge_to_parquet
from tsda.augment.magnitude import MAGNITUDES
from tsda.commands import search
from tsda.commands.options import (
    DEVICE_HELP,
    add_data_arguments,
    build_datamodule,
    command_parser,
    data_rules,
    pick_subcommand,
    refuse_inapplicable,
    resolve_device,
)
from tsda.data.batch import FlowBatch
from tsda.data.curation import STORED_SPLITS, holds_copies
from tsda.data.datamodule import FlowDataModule
from tsda.errors import TsdaError
from tsda.figures import pyplot, save_figure
from tsda.generators.base import prepare_augmentation
from tsda.seeds import seeded_generator


def list_augmentations() -> str:
    """The catalog as a text table: name, family, altered features (probabilities), the
    range magnitude m in [0, 1] sets (`tsda.augment.magnitude`), defaults."""
    rows: list[tuple[str, ...]] = [("name", "family", "size", "dir", "iat", "magnitude m: 0..1", "defaults")]
    for name, cls in AUGMENTATIONS.items():
        a = cls.alters
        params = (
            ", ".join([*(f"{k}=<required>" for k in required(cls)), *(f"{k}={v!r}" for k, v in defaults(cls).items())])
            or "-"
        )
        span = MAGNITUDES[cls].describe(cls) if cls in MAGNITUDES else "-"
        # a policy alters what its ops alter: no fixed probabilities of its own
        alters = ["-"] * 3 if cls.family == "combinator" else [f"{a[k]:g}" for k in ("size", "direction", "iat")]
        rows.append((name, cls.family, *alters, span, params))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def _prepared(spec: str, cfg: Namespace, device: torch.device) -> tuple[Augmentation, FlowDataModule, torch.Generator]:
    """The augmentation `spec`, the datamodule of the `--data.*` options, and the seeded
    generator of the draws on `device`, the augmentation set up as in training on `device`
    (the data's classes and codec; generator checkpoints loaded there and checked)."""
    augmentation = build_augmentation(spec)
    dm = build_datamodule(cfg)
    g = seeded_generator(cfg.seed, device)
    prepare_augmentation(
        augmentation, device=device, class_names=dm.class_names, generator=g, codec=dm.codec, datamodule=dm
    )
    return augmentation, dm, g


class OnDevice(Augmentation):
    """`augmentation` run on `device` with its own generator there: each call moves the
    batch to `device`, augments it with `generator` (whatever generator the caller
    passes, a CPU one, is left alone) and returns the copies on the caller's device. Lets
    `tsda augment enlarge` (whose `tsda.augment.enlarge` draws on the CPU) augment on a GPU;
    its `repr` is the augmentation's, which the written `augmentation` column stores."""

    family = "combinator"

    def __init__(self, augmentation: Augmentation, device: torch.device, generator: torch.Generator) -> None:
        self.augmentation, self.device, self._generator = augmentation, device, generator

    def children(self) -> list[Augmentation]:
        return [self.augmentation]

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        return self.augmentation(batch.to(self.device), self._generator).to(batch.device)

    def __repr__(self) -> str:
        return repr(self.augmentation)


def preview_figure(before: FlowBatch, after: FlowBatch, class_names: list[str], title: str):  # -> Figure
    """Each flow of `before` and `after` (same rows): size x direction bars and the
    encoded iat per packet, one row per flow."""
    plt = pyplot()

    fig, axes = plt.subplots(len(before), 2, figsize=(10, 1.8 * len(before)), squeeze=False, sharex=True)
    versions = ((before, "before", -0.2, "tab:blue"), (after, "after", 0.2, "tab:orange"))
    for i in range(len(before)):
        for version, label, shift, color in versions:
            n = int(version.lengths[i])
            signed = (version.x[i, 0, :n] * version.x[i, 1, :n]).numpy()  # (n,)
            axes[i, 0].bar(np.arange(n) + shift, signed, width=0.4, color=color, label=label)
            axes[i, 1].plot(np.arange(n), version.x[i, 2, :n].numpy(), "o-", color=color, ms=3, label=label)
        axes[i, 0].set_ylabel(class_names[int(before.labels[i])][:18], fontsize=7)
    axes[0, 0].set_title("size x direction (+ client to server)")
    axes[0, 1].set_title("iat (encoded)")
    axes[0, 1].legend(fontsize=7)
    axes[-1, 0].set_xlabel("packet")
    axes[-1, 1].set_xlabel("packet")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def preview(cfg: Namespace) -> Path:
    """A PNG of `--flows` training flows before and after the augmentation."""
    if cfg.name not in AUGMENTATIONS and not Path(cfg.name).is_file():
        augmentation_class(cfg.name)  # raises, listing the names
    device = resolve_device(cfg.device)
    augmentation, dm, g = _prepared(cfg.name, cfg, device)
    batch = dm.codec.encode(dm.split_table("train"))
    # the flows shown: the same ones on every device (a CPU draw; on the CPU the draws go on from it)
    pick = g if device.type == "cpu" else seeded_generator(cfg.seed)
    before = batch.index(torch.randperm(len(batch), generator=pick)[: cfg.flows])
    after = augmentation(before.to(device), g).to("cpu")
    return save_figure(preview_figure(before, after, dm.class_names, repr(augmentation)), cfg.out, dpi=110)


def enlarge(cfg: Namespace) -> Path:
    """Every curated flow with its split, plus `--copies` augmented copies of each training
    flow, as Parquet (see the module docstring)."""
    if cfg.copies < 1:
        raise TsdaError(f"--copies must be >= 1 (augmented copies per training flow), got {cfg.copies}")
    device = resolve_device(cfg.device)
    augmentation, dm, g = _prepared(cfg.augment, cfg, device)
    if device.type != "cpu":  # `enlarge_to_parquet` draws with a CPU generator of --seed; here on `device`
        augmentation = OnDevice(augmentation, device, g)
    h, splits = dm.hparams, dm.splits
    if holds_copies(dm.table):
        raise TsdaError(f"--data.path {h.path}: already enlarged (it holds augmented copies); enlarge its source")
    if len(splits["train"]) == 0:
        raise TsdaError(f"--data.split {h.split} leaves no training flow to enlarge")
    rows = np.sort(np.concatenate([splits[k] for k in STORED_SPLITS]))  # flows not in a split are left out
    names = np.empty(len(dm.table), dtype=object)
    for k in STORED_SPLITS:
        names[splits[k]] = k
    out = enlarge_to_parquet(
        dm.table.take(rows),
        dm.codec,
        augmentation,
        cfg.copies,
        cfg.out,
        seed=cfg.seed,
        split=names[rows],
        split_column=h.split_column,
    )
    n = {k: len(splits[k]) for k in STORED_SPLITS}
    print(
        f"wrote {out}: {n['train']} training flows + {cfg.copies} copies each, {n['val']} validation and "
        f"{n['test']} test flows untouched ({len(rows) + cfg.copies * n['train']} rows) with {augmentation!r}; "
        f"train on it with --data.path {out} --data.split column"
    )
    return out


USAGE = (
    "usage: tsda augment {list,preview,enlarge,search} [options]\n\ncommands:\n"
    "  list     names, families, altered features and defaults\n"
    "  preview  PNG of a few training flows before/after an augmentation\n"
    "  enlarge  every flow with a stored split column + K augmented copies of each training flow\n"
    "  search   a TrivialAugment policy searched with Optuna (other options: tsda fit overrides)\n"
    "`tsda augment COMMAND --help` describes each."
)


def list_parser() -> ArgumentParser:
    return command_parser("tsda augment list", "names, families, altered features and defaults", config=False)


def _drawing_options(parser: ArgumentParser) -> ArgumentParser:
    """What preview and enlarge share: the seed and device of the draws, the data."""
    parser.add_argument("--seed", type=int, default=0, help="seeds the augmentation draws")
    parser.add_argument("--device", type=str, default="auto", help=f"where the augmentation runs: {DEVICE_HELP}")
    add_data_arguments(parser)
    return parser


def preview_parser() -> ArgumentParser:
    p = command_parser("tsda augment preview", "PNG of a few training flows before/after an augmentation")
    p.add_argument("name", type=str, help=f"one of {', '.join(AUGMENTATIONS)}, or a YAML file")
    p.add_argument("--out", type=str, required=True, help="PNG file to write")
    p.add_argument("--flows", type=int, default=4, help="flows to show")
    return _drawing_options(p)


def enlarge_parser() -> ArgumentParser:
    e = command_parser(
        "tsda augment enlarge",
        "every flow with a stored split column + K augmented copies of each training flow, as Parquet",
    )
    e.add_argument("--augment", type=str, required=True, help="augmentation name or YAML config")
    e.add_argument("--copies", type=int, required=True, help="augmented copies per flow (K)")
    e.add_argument("--out", type=str, required=True, help="Parquet file to write")
    return _drawing_options(e)


PARSERS = {"list": list_parser, "preview": preview_parser, "enlarge": enlarge_parser, "search": search.build_parser}
#: `--data.*` options per data source; enlarge writes its split column whatever the source
RULES = {"preview": data_rules(), "enlarge": data_rules(keep=("split_column",))}


def main(argv: list[str] | None = None) -> None:
    """`tsda augment list | preview NAME ... | enlarge ... | search ...`."""
    picked = pick_subcommand(
        "augment", list(sys.argv[1:] if argv is None else argv), PARSERS, USAGE, passes_on=("search",)
    )
    if picked is None:
        return
    name, parser, rest = picked
    if name == "search":  # its unknown options are tsda fit overrides: parsed by the search itself
        search.main(rest)
        return
    cfg = parser.parse_args(rest)
    refuse_inapplicable(parser, cfg, RULES.get(name, ()))
    if name == "list":
        print(list_augmentations())
    elif name == "preview":
        print(f"wrote {preview(cfg)}")
    else:
        enlarge(cfg)
