"""What every generator family shares: the EMA of its weights, the class names it reads, the
codec it refuses to train on when the data differ."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.tiny import N_PACKETS, datamodule, trainer

from tsda.classifier.module import ClassifierModule
from tsda.generators.gan.module import GANModule


def test_ema_ramps_up_then_averages() -> None:
    """The shared EMA (`tsda.generators.ema`) copies at the first update, follows closely while
    `(1 + n) / (10 + n)` is below the decay, and averages afterwards."""
    from tsda.generators.ema import ema_of

    net = torch.nn.Linear(1, 1, bias=False)
    ema = ema_of(net, decay=0.9, ramp=True)
    with torch.no_grad():
        net.weight.fill_(1.0)
        ema.update_parameters(net)  # n = 0: a copy
        assert float(ema.module.weight) == 1.0
        net.weight.fill_(2.0)
        ema.update_parameters(net)  # n = 1: decay min(0.9, 2 / 11)
        assert abs(float(ema.module.weight) - (1.0 + (1 - 2 / 11))) < 1e-6
    flat = ema_of(net, decay=0.9)  # no ramp: the decay from the second update on
    with torch.no_grad():
        flat.update_parameters(net)  # a copy: 2.0
        net.weight.fill_(3.0)
        flat.update_parameters(net)
        assert abs(float(flat.module.weight) - 2.1) < 1e-6
    with pytest.raises(ValueError, match="ema_decay"):
        ema_of(net, decay=1.0)


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_every_generator_checks_ema_decay_at_construction(decay: float) -> None:
    """One check (`tsda.generators.ema.check_ema_decay`), one message, for every generator."""
    from tsda.generators.diffusion.module import DiffusionModule

    for make in (
        lambda: GANModule(num_classes=2, ema_decay=decay),
        lambda: DiffusionModule(num_classes=2, block_out_channels=(8, 16), ema_decay=decay),
    ):
        with pytest.raises(ValueError, match=r"model\.ema_decay must be in \[0, 1\), got"):
            make()


def test_class_names_are_read_one_way_by_every_module() -> None:
    from tsda.lit import class_names_from

    assert class_names_from({"num_classes": 3}) == ["0", "1", "2"]
    assert class_names_from({"num_classes": 2, "class_names": ("a", "b")}) == ["a", "b"]
    assert GANModule(num_classes=2).class_names == ["0", "1"]
    clf = ClassifierModule(num_classes=2, class_names=["x", "y"], backbone_kwargs={"width": 8})
    assert clf.class_names == ["x", "y"]


@pytest.mark.parametrize("module", ["gan", "diffusion"])
def test_fit_refuses_data_with_other_codec_settings(tmp_path: Path, module: str) -> None:
    """Every generator (GenerativeModule.on_fit_start) stops when the data's codec differs."""
    from tsda.generators.diffusion.module import DiffusionModule

    dm = datamodule()  # n_packets = N_PACKETS
    model = (
        GANModule(num_classes=2, n_packets=N_PACKETS + 4, width=8, disc_width=8, depth=1)
        if module == "gan"
        else DiffusionModule(num_classes=2, n_packets=N_PACKETS + 4, block_out_channels=(8, 16))
    )
    with pytest.raises(ValueError, match="codec settings .* differ from the data's"):
        trainer(tmp_path, 1).fit(model, datamodule=dm)
