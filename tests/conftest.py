"""Shared test settings: W&B off, one torch thread (small tensors; no oversubscription)."""

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
