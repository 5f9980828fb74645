"""Tiny data, classifiers and GANs for the generator, sampling and fidelity tests."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from tsda.classifier.module import ClassifierModule
from tsda.data.datamodule import FlowDataModule
from tsda.data.table import FlowTable
from tsda.generators.gan.module import GANModule

N_PACKETS = 12
TINY_GAN = {"noise_dim": 8, "width": 16, "depth": 1, "disc_width": 8}


def class_table(n_per_class: int = 60, seed: int = 0, packets: int = N_PACKETS) -> FlowTable:
    """Three easily told apart classes of valid flows with lengths in [6, packets]:
    `small_up` (small upstream packets, short gaps), `big_down` (large downstream packets,
    long gaps), `mixed` (alternating directions, medium sizes and gaps)."""
    rng = np.random.default_rng(seed)
    n = 3 * n_per_class
    labels = np.repeat(np.arange(3), n_per_class)
    k = labels[:, None]  # (N, 1)
    centre = np.choose(k, [80.0, 1300.0, 600.0])  # (N, 1) bytes
    sizes = np.clip(centre + rng.normal(0, 40, (n, packets)), 1, 1460).round()
    alternating = np.broadcast_to(np.arange(packets) % 2, (n, packets))
    directions = np.where(k == 0, 0, np.where(k == 1, 1, alternating)).astype(np.int8)
    scale = np.choose(k, [1e-3, 0.3, 0.02])  # (N, 1) seconds
    gaps = scale * rng.lognormal(0, 0.3, (n, packets))
    gaps[:, 0] = 0.0
    lengths = rng.integers(6, packets + 1, n)
    real = np.arange(packets)[None, :] < lengths[:, None]
    return FlowTable(
        labels=labels.astype(np.int64),
        class_names=("small_up", "big_down", "mixed"),
        sizes=sizes * real,
        directions=directions * real,
        times=np.cumsum(gaps, 1) * real,
        lengths=lengths.astype(np.int64),
        packets=lengths.astype(np.int64) + 5,
    )


def datamodule(seed: int = 0, batch_size: int = 32) -> FlowDataModule:
    """Train / val / test of `class_table` (60 / 20 / 20 flows per class), in memory."""
    tables = [class_table(n, seed + i) for i, n in enumerate((60, 20, 20))]
    return FlowDataModule.from_tables(
        *tables, n_packets=N_PACKETS, batch_size=batch_size, eval_batch_size=64, split_seed=seed
    )


def trainer(root: Path, epochs: int, **kwargs: object) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    )


def fit_classifier(root: Path, dm: FlowDataModule, epochs: int = 2) -> Path:
    """A tiny ClassifierModule checkpoint trained on `dm`."""
    torch.manual_seed(0)
    model = ClassifierModule(
        num_classes=dm.num_classes, class_names=dm.class_names, backbone_kwargs={"width": 8}, latent_points=0
    )
    fit = trainer(root, epochs)
    fit.fit(model, datamodule=dm)
    path = root / "classifier.ckpt"
    fit.save_checkpoint(path)
    return path


def fit_gan(
    root: Path, dm: FlowDataModule, epochs: int = 2, callbacks: list | None = None, **kwargs: object
) -> tuple[GANModule, Path, L.Trainer]:
    """A tiny GANModule fitted through the real Trainer, and its checkpoint."""
    torch.manual_seed(0)
    model = GANModule(
        num_classes=dm.num_classes, class_names=dm.class_names, n_packets=N_PACKETS, **{**TINY_GAN, **kwargs}
    )
    fit = trainer(root, epochs, callbacks=callbacks or [])
    fit.fit(model, datamodule=dm)
    path = root / "gan.ckpt"
    fit.save_checkpoint(path)
    return model, path, fit
