"""docs/extending.md followed literally, with tiny classes: a toy augmentation and a toy
generator in a package of their own (`toymod`, written to a temporary folder on `sys.path`),
which `tsda augment list`, `tsda fit` and `tsda sample` accept.

Step 3 of "Add a hand-crafted augmentation" edits `HANDCRAFTED` in `tsda/augment/catalog.py`
and step 4 `MAGNITUDES` in `tsda/augment/magnitude.py`; a test cannot edit the sources, so
`named_in_catalog` makes the same entries in those plain dicts for the length of a test
(`AUGMENTATIONS` is a copy of `HANDCRAFTED` made at import: an edit of the literal is in
both). Everything else goes through the commands, as the page says.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tsda.augment import catalog, magnitude
from tsda.augment.validity import assert_valid
from tsda.cli import main
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.sources import read_parquet
from tsda.data.synthetic import make_synthetic

TOY_MODULE = "toymod"
#: the toy package: the page's `Reverse` (steps 1-2 of "Add a hand-crafted augmentation") and a
#: generator after step 2 of "Add a generator" (the module's arguments, RunGenerator, buffers
#: fitted in `on_fit_start`, `sample` snapped by the codec)
TOY_SOURCE = '''
"""A toy extension of tsda: an order augmentation and a generator."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tsda.augment.base import Augmentation
from tsda.augment.ops import finish, gather_packets, positions, randint_upto
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.generators.base import GenerativeModule
from tsda.lit import check_class_names
from tsda.lit.rng import RunGenerator


class Reverse(Augmentation):
    """Reverse the packets of a random window of each flow (packets move whole).

    Args:
        max_window: largest window in packets (4: a fifth of 20 packets).
    """

    family = "order"
    alters = {"size": 1.0, "direction": 1.0, "iat": 1.0}

    def __init__(self, max_window: int = 4) -> None:
        if not 2 <= max_window <= 20:
            raise ValueError(f"Reverse.max_window must be in [2, 20], got {max_window}")
        self.max_window = max_window

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        x, lengths = batch.x, batch.lengths  # (B, 3, L), (B,)
        pos = positions(batch.n_packets, batch.device)  # (1, L)
        widest = lengths.clamp(2, self.max_window)  # (B,)
        w = torch.minimum(2 + randint_upto(widest - 2, generator), lengths)  # (B,) in [2, widest], at most n
        start = randint_upto(lengths - w, generator)  # (B,) in [0, n - w]
        inside = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, L)
        src = torch.where(inside, (2 * start + w - 1)[:, None] - pos, pos)  # (B, L)
        return batch.replace(x=finish(gather_packets(x, src), lengths), lengths=lengths)


class ToyGenerator(GenerativeModule):
    """Each class's mean flow (fitted at fit start) plus Gaussian noise of a learnt scale
    per feature.

    Args:
        num_classes, class_names: the classes (linked from the datamodule by `tsda fit`).
        n_packets, mtu, iat_unit, iat_max: the codec settings.
        lr: Adam's learning rate for the noise scales.
        conditional: one mean per class (False: one mean of all flows).
        seed: seeds the training noise (linked from `--seed_everything`).
    """

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        n_packets: int = 20,
        mtu: float = 1460.0,
        iat_unit: float = 1e-3,
        iat_max: float = 10.0,
        lr: float = 0.05,
        conditional: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_class_names(class_names, num_classes)
        if not 0.0 < lr <= 1.0:
            raise ValueError(f"model.lr must be in (0, 1], got {lr}")
        self.save_hyperparameters()
        rows = num_classes if conditional else 1
        self.register_buffer("means", torch.zeros(rows, 3, n_packets))  # (K, 3, L)
        self.register_buffer("fitted", torch.tensor(False))
        self.log_scale = nn.Parameter(torch.zeros(3))  # (3,) log noise scale per feature
        self._rng = RunGenerator(seed, "noise")

    def _rows(self, labels: torch.Tensor) -> torch.Tensor:
        return labels if self.conditional else torch.zeros_like(labels)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if bool(self.fitted):
            return
        sums, counts = torch.zeros_like(self.means), torch.zeros(len(self.means), device=self.device)
        for batch in self.trainer.datamodule.train_eval_dataloader():
            rows = self._rows(batch.labels.to(self.device))
            sums.index_add_(0, rows, batch.x.to(self.device))
            counts.index_add_(0, rows, torch.ones_like(rows, dtype=torch.float))
        self.means.copy_(sums / counts.clamp_min(1)[:, None, None])
        self.fitted.fill_(True)

    def training_step(self, batch: FlowBatch, batch_idx: int) -> torch.Tensor:
        g = self._rng.get(self.device, self.global_rank)
        jitter = 1e-3 * torch.randn(batch.x.shape, generator=g, device=self.device)  # (B, 3, L)
        residual = batch.x + jitter - self.means[self._rows(batch.labels)]  # (B, 3, L)
        log_scale = self.log_scale[None, :, None]  # (1, 3, 1)
        loss = (0.5 * residual**2 * torch.exp(-2 * log_scale) + log_scale).mean()  # Gaussian NLL
        self.log("train_loss", loss, batch_size=len(batch))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        self._rng.save_to(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng.load_from(checkpoint)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator, temperature: float = 1.0) -> FlowBatch:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        noise = torch.randn((len(labels), 3, self.hparams.n_packets), generator=generator, device=self.device)
        x = self.means[self._rows(labels)] + temperature * self.log_scale.exp()[None, :, None] * noise  # (B, 3, L)
        return self.codec.snap(x).replace(labels=labels)
'''

#: tiny embedded synthetic data (3 apps, a few hundred flows), one quiet epoch
DATA = [
    "--data.synthetic_scale",
    "0.02",
    "--data.synthetic_apps",
    "3",
    "--data.min_class_size",
    "5",
    "--data.n_packets",
    "12",
]
QUIET = [
    "--trainer.max_epochs",
    "1",
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--latent_plot",
    "false",
]


@pytest.fixture(scope="module")
def toymod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The toy package, importable as `toymod` (as `class_path`s and checkpoints name it)."""
    root = tmp_path_factory.mktemp("toy")
    (root / f"{TOY_MODULE}.py").write_text(TOY_SOURCE)
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    mp.setenv("WANDB_MODE", "disabled")
    mp.delitem(sys.modules, TOY_MODULE, raising=False)
    try:
        yield importlib.import_module(TOY_MODULE)
    finally:
        mp.undo()
        sys.modules.pop(TOY_MODULE, None)


@pytest.fixture
def named_in_catalog(monkeypatch: pytest.MonkeyPatch, toymod: ModuleType) -> type:
    """Steps 3 and 4 of the page, for this test only: `"reverse": Reverse` in `HANDCRAFTED`
    (and so in `AUGMENTATIONS`) and its magnitude range in `MAGNITUDES`."""
    cls = toymod.Reverse
    monkeypatch.setitem(catalog.HANDCRAFTED, "reverse", cls)
    monkeypatch.setitem(catalog.AUGMENTATIONS, "reverse", cls)
    monkeypatch.setitem(
        magnitude.MAGNITUDES,
        cls,
        magnitude.Magnitude(
            "max_window", 7, "7 of 20 packets; longer windows scramble the flow", bottom=1, integer=True
        ),
    )
    return cls


def encoded_batch() -> FlowBatch:
    return FlowCodec(n_packets=12).encode(make_synthetic(n_apps=3, scale=0.02, seed=0))


def test_the_toy_augmentation_keeps_the_rules(toymod: ModuleType) -> None:
    reverse = toymod.Reverse
    with pytest.raises(ValueError, match=r"Reverse\.max_window"):
        reverse(max_window=21)
    batch = encoded_batch()
    before = batch.x.clone()
    out = reverse(max_window=6)(batch, torch.Generator().manual_seed(0))
    assert_valid(out, like=batch)
    assert torch.equal(batch.x, before), "the input is never modified"
    again = reverse(max_window=6)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out.x, again.x) and not torch.equal(out.x, batch.x)


def test_named_in_the_catalog_it_is_listed_built_by_name_and_drawn_by_the_policies(
    named_in_catalog: type, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["augment", "list"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("reverse "))
    assert row.split()[1:5] == ["order", "1", "1", "1"]
    assert "max_window: 1..7 (default m=0.5)" in row and "max_window=4" in row
    assert type(catalog.build_augmentation("reverse")) is named_in_catalog
    policy = catalog.build_augmentation(
        {"class_path": "tsda.augment.policy.TrivialAugment", "init_args": {"ops": ["reverse"]}}
    )
    batch = encoded_batch()
    assert_valid(policy(batch, torch.Generator().manual_seed(0)), like=batch)
    for level in range(101):  # every magnitude builds (at 0 and what rounds to `bottom`: the identity)
        op = magnitude.from_magnitude(named_in_catalog, level / 100)
        assert_valid(op(batch, torch.Generator().manual_seed(level)), like=batch)


def test_tsda_fit_trains_a_classifier_with_it(
    toymod: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reverse = toymod.Reverse
    call, calls = reverse.__call__, []

    def counted(self: object, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        calls.append(len(batch))
        return call(self, batch, generator)

    monkeypatch.setattr(reverse, "__call__", counted)
    config = tmp_path / "reverse.yaml"  # step 5: configs/augment/reverse.yaml
    config.write_text(f"class_path: {TOY_MODULE}.Reverse\ninit_args:\n  max_window: 4\n")
    run = tmp_path / "run"
    main(
        [
            "fit",
            "--model",
            "tsda.classifier.module.ClassifierModule",
            "--model.init_args.augmentation",
            str(config),
            *DATA,
            *QUIET,
            "--run_dir",
            str(run),
        ]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 <= metrics["test_weighted_f1"] <= 1.0
    assert calls, "the training batches went through the toy augmentation"
    best = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert best["augmentation_repr"] == "Reverse(max_window=4)"


def test_tsda_fit_trains_the_toy_generator_and_tsda_sample_draws_from_it(
    toymod: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "synthetic_toy.yaml"  # step 4: configs/experiment/<data>_<family>.yaml
    config.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 0
            model:
              class_path: {TOY_MODULE}.ToyGenerator
              init_args:
                n_packets: 12      # equal to data.n_packets
                lr: 0.05
            data:
              synthetic_scale: 0.02
              synthetic_apps: 3
              min_class_size: 5
              n_packets: 12
            trainer:
              max_epochs: 1
              accelerator: cpu
            """
        )
    )
    run = tmp_path / "run"
    main(["fit", "-c", str(config), *QUIET, "--run_dir", str(run)])
    ckpt = run / "checkpoints/last.ckpt"
    assert json.loads((run / "metrics.json").read_text())["best_checkpoint"] == str(ckpt)
    trained = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert trained["tsda_class_path"] == f"{TOY_MODULE}.ToyGenerator" and "tsda_rng" in trained
    assert trained["state_dict"]["fitted"] and trained["state_dict"]["log_scale"].abs().sum() > 0

    out = tmp_path / "flows.parquet"
    sample = ["sample", "--ckpt", str(ckpt), "--per_class", "4", "--seed", "0", "--device", "cpu", "--no_progress"]
    main([*sample, "--option", "temperature=0.5", "--out", str(out)])
    flows = read_parquet(out)
    again = tmp_path / "again.parquet"  # the same seed draws the same flows
    main([*sample, "--option", "temperature=0.5", "--out", str(again)])
    assert (read_parquet(again).sizes == flows.sizes).all() and (read_parquet(again).times == flows.times).all()
    assert len(flows) == 12 and sorted(set(flows.labels.tolist())) == [0, 1, 2]
    codec = FlowCodec(n_packets=12)
    assert_valid(codec.encode(flows), codec)
    with pytest.raises(SystemExit) as refused:  # an option its `sample` does not name
        main([*sample, "--option", "top_k=5", "--out", str(tmp_path / "refused.parquet")])
    assert refused.value.code == 2 and "top_k" in capsys.readouterr().err
    assert not (tmp_path / "refused.parquet").exists()
