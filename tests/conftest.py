"""Shared test settings and fixtures: W&B off, one torch thread (small tensors; no
oversubscription); FG-Net D1 when present; the tiny classifier and cGAN checkpoints several rooms
use, trained once per session (builders in `tests/support/`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ["WANDB_MODE"] = "disabled"
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
FGNET_D1 = REPO.parent / "shared" / "data" / "fgnet" / "d1.parquet"


@pytest.fixture
def fgnet_d1() -> Path:
    """Path of FG-Net D1; the test is skipped when the shared data is absent."""
    if not FGNET_D1.is_file():
        pytest.skip(f"FG-Net D1 not found at {FGNET_D1}")
    return FGNET_D1


@pytest.fixture(scope="session")
def tiny_classifier_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `ClassifierModule` checkpoint, 1 epoch on `support.tiny.datamodule()` (3 classes)."""
    from support.tiny import datamodule, fit_classifier

    return fit_classifier(tmp_path_factory.mktemp("classifier"), datamodule(), epochs=1)


@pytest.fixture(scope="session")
def tiny_gan_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain cGAN checkpoint (no encoder: it cannot vary), 1 epoch on `support.tiny.datamodule()`."""
    from support.tiny import datamodule, fit_gan

    return fit_gan(tmp_path_factory.mktemp("gan"), datamodule(), epochs=1)[1]
