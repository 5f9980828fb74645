"""The classifiers `tsda evaluate` trains: TSTR, TRTR and real + synthetic (the traffic
classifier trained to early stopping on synthetic flows, on real flows, and on both, always
validated and tested on real flows), and the post-hoc GRU discriminator.

Protocol (one seed): a fresh `ClassifierModule` (the committed backbone, weights drawn from
the seed) trains with the class-weighted sampler on the TRAIN table, is validated every
epoch on the real VALIDATION split (flows that neither the generator nor this classifier
trained on), stops after `patience` epochs without a better validation weighted F1 (at
most `max_epochs`), and its best epoch's weights are tested on the real TEST split.
Lightning's Trainer runs it on the training device (`accelerator`, default `auto`).

    tstr: TRAIN = the synthetic flows.
    trtr: TRAIN = the real training flows the generator saw (the `--data.*` split, including
        `--data.train_fraction`).
    real_plus_synthetic: TRAIN = both (the number that predicts augmentation value).

GRU discriminative score (`gru_discriminative_score`, the post-hoc discriminator of TimeGAN
and Diffusion-TS): a fresh 2-layer GRU classifier (`ClassifierModule(backbone="gru")`,
bidirectional, hidden 32, sequences packed by length) learns to tell real test flows from
synthetic ones: n = min(real test, synthetic, max_flows) flows of each, split per source
70 / 10 / 20 into train / validation (early stopping, patience as above) / held-out test;
`score = |held-out accuracy - 0.5|` (0 = indistinguishable, 0.5 = trivially told apart).
TimeGAN trains a unidirectional GRU for a fixed 2,000 iterations on an 80 / 20 split; early
stopping on a validation slice replaces the fixed budget here.

Each TSTR set is repeated for `seeds` seeds (0, 1, ...) and reported as `{"seeds": [per-seed test
metrics with epochs trained], "mean": {...}, "std": {...}}`; `ratio = mean tstr weighted F1 /
mean trtr weighted F1`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from tsda.classifier.module import ClassifierModule
from tsda.data.codec import FlowCodec
from tsda.data.datamodule import FlowDataModule
from tsda.data.table import FlowTable
from tsda.seeds import seeded_init

#: test metrics each trained classifier reports (ClassifierModule's `test_*` keys)
SCORES = ("weighted_f1", "macro_f1", "accuracy")


@dataclass(frozen=True)
class TstrSettings:
    """How each TSTR/TRTR classifier trains (see the module docstring).

    Attributes:
        seeds: classifiers per training set (seeds 0 .. seeds - 1).
        max_epochs: at most this many epochs.
        patience: early-stopping patience in epochs on validation weighted F1.
        batch_size: training batch size.
        accelerator: Lightning accelerator (`auto`, `cpu`, `gpu`, ...).
        model_kwargs: further `ClassifierModule` arguments (e.g. `backbone_kwargs`).
    """

    seeds: int = 3
    max_epochs: int = 100
    patience: int = 5
    batch_size: int = 256
    accelerator: str = "auto"
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"--tstr_seeds must be >= 1, got {self.seeds}")
        if self.max_epochs < 1 or self.patience < 1:
            raise ValueError(
                f"--tstr_max_epochs and --tstr_patience must be >= 1, got {self.max_epochs} and {self.patience}"
            )


def train_and_test(
    train: FlowTable, val: FlowTable, test: FlowTable, codec: FlowCodec, seed: int, settings: TstrSettings
) -> dict[str, Any]:
    """Test metrics (`SCORES`) of one classifier trained on `train` to early stopping on
    `val`, best weights, plus `epochs` (trained), `best_epoch`, `seconds`. The three tables
    share `class_names`."""
    if not (train.class_names == val.class_names == test.class_names):
        raise ValueError("train, val and test tables must share class_names")
    if len(train) == 0 or len(val) == 0 or len(test) == 0:
        raise ValueError(f"TSTR needs flows in every set, got train {len(train)}, val {len(val)}, test {len(test)}")
    started = time.perf_counter()
    dm = FlowDataModule.from_tables(
        train,
        val,
        test,
        n_packets=codec.n_packets,
        mtu=codec.mtu,
        iat_unit=codec.iat_unit,
        iat_max=codec.iat_max,
        batch_size=settings.batch_size,
        sampler="class_weighted",
        split_seed=seed,
        sampler_seed=seed,
    )
    with seeded_init(seed):
        model = ClassifierModule(
            num_classes=len(train.class_names),
            class_names=list(train.class_names),
            seed=seed,
            **{"latent_points": 0, **settings.model_kwargs},
        )
    metric, mode = ClassifierModule.monitor or ("val_weighted_f1", "max")
    with tempfile.TemporaryDirectory(prefix="tsda-tstr-") as work:
        best = ModelCheckpoint(dirpath=work, monitor=metric, mode=mode, save_top_k=1, filename="best")
        trainer = L.Trainer(
            max_epochs=settings.max_epochs,
            logger=False,
            default_root_dir=work,
            callbacks=[best, EarlyStopping(monitor=metric, mode=mode, patience=settings.patience)],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            accelerator=settings.accelerator,
            devices=1,
        )
        trainer.fit(model, dm)
        (result,) = trainer.test(model, dm, ckpt_path=best.best_model_path or None, verbose=False)
        best_epoch = _best_epoch(best)
    scores = {k: float(result[f"test_{k}"]) for k in SCORES}
    return {
        **scores,
        "epochs": int(trainer.current_epoch),
        "best_epoch": best_epoch,
        "seconds": time.perf_counter() - started,
    }


def _best_epoch(callback: ModelCheckpoint) -> int | None:
    """The 0-based epoch of the best checkpoint, read back from it."""
    if not callback.best_model_path:
        return None
    from tsda.lit.checkpoint import read_checkpoint

    return int(read_checkpoint(callback.best_model_path).get("epoch", -1))


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """`{"seeds": runs, "mean": {score: ...}, "std": {score: ... (ddof 1; 0 for one seed)},
    "epochs": [trained epochs per seed]}`."""
    values = {k: np.array([r[k] for r in runs], dtype=float) for k in SCORES}
    return {
        "seeds": runs,
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
        "epochs": [r["epochs"] for r in runs],
    }


def repeated(
    train: FlowTable, val: FlowTable, test: FlowTable, codec: FlowCodec, settings: TstrSettings, what: str
) -> dict[str, Any]:
    """`train_and_test` for seeds 0 .. settings.seeds - 1, aggregated; prints one line each."""
    runs = []
    for seed in range(settings.seeds):
        run = train_and_test(train, val, test, codec, seed, settings)
        print(
            f"tsda evaluate: {what} seed {seed}: weighted F1 {run['weighted_f1']:.4f} after "
            f"{run['epochs']} epochs ({run['seconds']:.0f} s)",
            flush=True,
        )
        runs.append({"seed": seed, **run})
    return aggregate(runs)


def trtr(
    real_train: FlowTable, val: FlowTable, test: FlowTable, codec: FlowCodec, settings: TstrSettings
) -> dict[str, Any]:
    """Train on real, test on real: the reference every generator is divided by."""
    return {**repeated(real_train, val, test, codec, settings, "TRTR"), "n_train": len(real_train)}


def tstr(
    synthetic: FlowTable,
    real_train: FlowTable,
    val: FlowTable,
    test: FlowTable,
    codec: FlowCodec,
    settings: TstrSettings,
    reference: dict[str, Any],
    real_plus_synthetic: bool = True,
) -> dict[str, Any]:
    """TSTR (and real + synthetic, unless switched off) of one generator against the TRTR
    `reference` (from `trtr`)."""
    on_synthetic = repeated(synthetic, val, test, codec, settings, "TSTR")
    ref = reference["mean"]["weighted_f1"]
    out: dict[str, Any] = {
        "tstr": {**on_synthetic, "n_train": len(synthetic)},
        "trtr": reference,
        "ratio": on_synthetic["mean"]["weighted_f1"] / ref if ref > 0 else None,
    }
    if real_plus_synthetic:
        both = repeated(
            FlowTable.concat([real_train, synthetic.truncate(codec.n_packets)]),
            val,
            test,
            codec,
            settings,
            "real + synthetic",
        )
        out["real_plus_synthetic"] = {**both, "n_train": len(real_train) + len(synthetic)}
        out["real_plus_synthetic_gain"] = both["mean"]["weighted_f1"] - ref
    return {
        **out,
        "protocol": {
            "seeds": settings.seeds,
            "max_epochs": settings.max_epochs,
            "patience": settings.patience,
            "batch_size": settings.batch_size,
            "validation": "real val split",
            "test": "real test split",
        },
    }


def source_table(real: FlowTable, synthetic: FlowTable) -> FlowTable:
    """Real and synthetic flows as one two-class table: label 1 = `real`, 0 = `synthetic`."""

    def relabel(t: FlowTable, label: int) -> FlowTable:
        return replace(t, labels=np.full(len(t), label, dtype=np.int64), class_names=("synthetic", "real"), meta={})

    return FlowTable.concat([relabel(synthetic, 0), relabel(real, 1)])


def gru_discriminative_score(
    real: FlowTable,
    synthetic: FlowTable,
    codec: FlowCodec,
    settings: TstrSettings,
    seed: int = 0,
    max_flows: int = 5000,
) -> dict[str, Any]:
    """The post-hoc GRU discriminator's `|held-out accuracy - 0.5|` (module docstring)."""
    from tsda.data.curation import split_indices

    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic), max_flows)
    if n < 20:
        raise ValueError(f"the GRU discriminative score needs >= 20 flows of each, got {n}")
    pick = lambda t: t.take(np.sort(rng.permutation(len(t))[:n])).truncate(codec.n_packets)  # noqa: E731
    both = source_table(pick(real), pick(synthetic))
    parts = split_indices(both, "stratified", seed, val_fraction=0.1, test_fraction=0.2)
    gru = replace(settings, model_kwargs={"backbone": "gru", "backbone_kwargs": {"hidden": 32, "latent_dim": 32}})
    run = train_and_test(both.take(parts["train"]), both.take(parts["val"]), both.take(parts["test"]), codec, seed, gru)
    return {
        "accuracy": run["accuracy"],
        "score": abs(run["accuracy"] - 0.5),
        "n_per_source": int(n),
        "epochs": run["epochs"],
        "seconds": run["seconds"],
        "protocol": "2-layer bidirectional GRU (hidden 32), 70/10/20 split, early stopping on validation",
    }
