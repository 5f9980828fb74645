"""Checkpoints keep loading across layouts: today's (a kept fixture) and the old flat one
(`tsda.lit.*` class paths, mapped by `tsda.lit.checkpoint.MOVED_MODULES`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tsda.augment.validity import assert_valid
from tsda.cli import main
from tsda.data.sources import parquet_rows
from tsda.generators.base import load_generative
from tsda.generators.gan.module import GANModule
from tsda.lit.checkpoint import MOVED_MODULES, current_class_path, read_checkpoint

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "cgan_tiny.ckpt"
OLD_PATH = "tsda.lit.gan.GANModule"


def old_layout_copy(tmp_path: Path) -> Path:
    """The fixture as the flat layout wrote it: every class path `tsda.lit.gan.GANModule`."""
    ckpt = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    ckpt["tsda_class_path"] = OLD_PATH
    ckpt["hyper_parameters"]["_class_path"] = OLD_PATH
    path = tmp_path / "old.ckpt"
    torch.save(ckpt, path)
    return path


def draw(model: GANModule) -> torch.Tensor:
    labels = torch.arange(model.hparams.num_classes).repeat(4)
    return model.sample(labels, torch.Generator().manual_seed(0)).x


def test_the_fixture_names_todays_class_and_samples_valid_flows() -> None:
    ckpt = read_checkpoint(FIXTURE)
    assert ckpt["tsda_class_path"] == "tsda.generators.gan.module.GANModule"
    model = load_generative(FIXTURE)
    assert isinstance(model, GANModule)
    flows = model.sample(torch.arange(model.hparams.num_classes), torch.Generator().manual_seed(0))
    assert_valid(flows)


def test_an_old_layout_checkpoint_loads_as_todays_class_and_samples_the_same(tmp_path: Path) -> None:
    old = old_layout_copy(tmp_path)
    assert torch.load(old, weights_only=True)["tsda_class_path"] == OLD_PATH
    assert read_checkpoint(old)["hyper_parameters"]["_class_path"] == "tsda.generators.gan.module.GANModule"
    model = load_generative(old)
    assert type(model) is GANModule
    torch.testing.assert_close(draw(model), draw(load_generative(FIXTURE)), rtol=0, atol=0)


def test_tsda_sample_reads_an_old_layout_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "flows.parquet"
    main(["sample", "--ckpt", str(old_layout_copy(tmp_path)), "--per_class", "3", "--seed", "0", "--out", str(out)])
    assert parquet_rows(out) == 3 * load_generative(FIXTURE).hparams.num_classes


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_every_moved_module_maps_to_an_importable_class_home(old: str) -> None:
    import importlib

    new = current_class_path(f"{old}.Anything").rpartition(".")[0]
    assert new == MOVED_MODULES[old] and not new.startswith(("tsda.lit.", "tsda.nets."))
    importlib.import_module(new)
    assert current_class_path("tsda.augment.order.Wrap") == "tsda.augment.order.Wrap"
