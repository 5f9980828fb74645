"""`GeneratorAugmentation(mode="vary")`: fresh variations and the variation pool, training
rows carried by `FlowBatch` and the datamodule, composition with hand-crafted augmentations
(`Compose`, `RandomApply`, `OneOf`), determinism and option checks, against a fake sampler
whose variations keep the source flow's sizes and directions (so each says its source)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support.tiny import N_PACKETS, class_table, datamodule

from tsda.augment.base import AugmentContext, Compose, OneOf, RandomApply, select
from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.order import Wrap
from tsda.augment.validity import assert_valid
from tsda.data.batch import IAT, FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.datamodule import FlowDataModule
from tsda.data.sources import write_parquet
from tsda.errors import TsdaError

CODEC = FlowCodec(n_packets=N_PACKETS)
NAMES = ("small_up", "big_down", "mixed")


class FakeSampler:
    """A `FlowSampler` whose `vary` keeps each flow's sizes and directions and moves its
    gaps toward one random level by `strength` (0: the flow itself); it records the
    strengths and options it was called with."""

    def __init__(self, can_vary: bool = True, conditional: bool = True) -> None:
        self.can_vary, self.conditional = can_vary, conditional
        self.strengths: list[torch.Tensor] = []
        self.options: list[dict[str, Any]] = []

    @property
    def class_names(self) -> list[str]:
        return list(NAMES)

    @property
    def codec(self) -> FlowCodec:
        return CODEC

    def sample(self, labels: torch.Tensor, generator: torch.Generator, **options: Any) -> FlowBatch:
        x = torch.zeros(len(labels), 3, N_PACKETS, device=labels.device)
        x[:, 0, 0], x[:, 1, 0] = torch.rand(len(labels), generator=generator, device=labels.device), 1.0
        return FlowBatch(x, torch.ones_like(labels), labels)

    def vary(
        self, batch: FlowBatch, strength: float | torch.Tensor, generator: torch.Generator, **options: Any
    ) -> FlowBatch:
        s = torch.as_tensor(strength, dtype=torch.float32, device=batch.device).expand(len(batch))  # (B,)
        self.strengths.append(s.clone())
        self.options.append(dict(options))
        level = torch.rand(len(batch), generator=generator, device=batch.device)  # (B,)
        gaps = batch.mask() & (torch.arange(batch.n_packets, device=batch.device) > 0)  # (B, L)
        x = batch.x.clone()
        x[:, IAT] = torch.where(gaps, (1 - s[:, None]) * x[:, IAT] + s[:, None] * level[:, None], 0.0)
        return FlowBatch(x, batch.lengths.clone(), batch.labels.clone())


@pytest.fixture(scope="module")
def dm() -> FlowDataModule:
    dm = datamodule()
    dm.setup("fit")
    return dm


def _context(dm: FlowDataModule, sampler: FakeSampler, seed: int = 0, train: bool = True) -> AugmentContext:
    return AugmentContext(
        device=torch.device("cpu"),
        class_names=tuple(dm.class_names),
        generator=torch.Generator().manual_seed(seed),
        codec=dm.codec,
        load_sampler=lambda path, device: sampler,
        train_flows=dm.tensors["train"] if train else None,
    )


def _setup(aug, dm: FlowDataModule, sampler: FakeSampler | None = None, seed: int = 0):
    context = _context(dm, sampler or FakeSampler(), seed)
    for a in aug.walk():
        a.setup(context)
    return aug


def _vary(**kwargs: Any) -> GeneratorAugmentation:
    return GeneratorAugmentation("fake.ckpt", mode="vary", progress=False, **kwargs)


def _batch(dm: FlowDataModule, n: int = 64, seed: int = 0) -> FlowBatch:
    train = dm.tensors["train"]
    return train.index(torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n])


def _sources(out: FlowBatch, train: FlowBatch) -> torch.Tensor:
    """`(B,)` whether each flow of `out` keeps the sizes and directions of training row `out.rows`."""
    return (out.x[:, :2] == train.x[out.rows, :2]).flatten(1).all(1)


# -- FlowBatch rows and the datamodule -------------------------------------------------------
def test_training_batches_say_their_training_rows(dm: FlowDataModule) -> None:
    train = dm.tensors["train"]
    assert torch.equal(train.rows, torch.arange(len(train)))
    assert dm.tensors["val"].rows is None
    for batch in list(dm.train_dataloader())[:3]:
        assert torch.equal(batch.x, train.x[batch.rows]) and torch.equal(batch.labels, train.labels[batch.rows])


def test_rows_survive_every_flowbatch_operation(dm: FlowDataModule) -> None:
    b = _batch(dm, 8)
    assert torch.equal(b.index(torch.tensor([3, 1])).rows, b.rows[[3, 1]])
    assert torch.equal(b.index(slice(2, 5)).rows, b.rows[2:5])
    assert torch.equal(b.to("cpu").rows, b.rows) and torch.equal(b.replace(x=b.x * 1).rows, b.rows)
    assert torch.equal(FlowBatch.cat([b, b]).rows, torch.cat([b.rows, b.rows]))
    plain = FlowBatch(b.x, b.lengths, b.labels)
    assert FlowBatch.cat([b, plain]).rows is None  # generated flows have no training row
    mask = torch.arange(8) % 2 == 0
    assert torch.equal(
        select(mask, b, b.index(torch.arange(8).flip(0))).rows, torch.where(mask, b.rows, b.rows.flip(0))
    )
    with pytest.raises(ValueError, match="rows"):
        FlowBatch(b.x, b.lengths, b.labels, rows=torch.arange(3))


# -- fresh variations -----------------------------------------------------------------------
def test_fresh_variations_are_of_each_flow_seeded_and_get_the_options(dm: FlowDataModule) -> None:
    sampler = FakeSampler()
    aug = _setup(_vary(strength=0.5, options={"steps": 3}), dm, sampler)
    batch = _batch(dm)
    out = aug(batch, torch.Generator().manual_seed(1))
    assert_valid(out, like=batch)
    assert torch.equal(out.rows, batch.rows) and _sources(out, dm.tensors["train"]).all()
    assert not torch.equal(out.x, batch.x) and aug.pool is None
    assert sampler.options[-1] == {"steps": 3} and torch.all(sampler.strengths[-1] == 0.5)
    again = aug(batch, torch.Generator().manual_seed(1))
    other = aug(batch, torch.Generator().manual_seed(2))
    assert torch.equal(again.x, out.x) and not torch.equal(other.x, out.x)
    same = _setup(_vary(strength=0.0), dm)(batch, torch.Generator().manual_seed(1))
    assert torch.equal(same.x, batch.x)  # strength 0: the flow itself


def test_a_list_of_strengths_draws_one_per_flow_uniformly(dm: FlowDataModule) -> None:
    sampler = FakeSampler()
    aug = _setup(_vary(strength=[0.25, 0.5, 1.0]), dm, sampler)
    train = dm.tensors["train"]
    aug(FlowBatch.cat([train] * 10), torch.Generator().manual_seed(0))  # 1800 flows
    drawn = sampler.strengths[-1]
    counts = torch.stack([(drawn == s).sum() for s in (0.25, 0.5, 1.0)]).float()
    assert counts.sum() == len(drawn) and (counts / counts.sum() - 1 / 3).abs().max() < 0.04


# -- the variation pool ----------------------------------------------------------------------
def test_the_pool_holds_k_variations_of_every_training_flow_and_draws_a_flows_own(dm: FlowDataModule) -> None:
    train = dm.tensors["train"]
    aug = _setup(_vary(variations_per_flow=3, strength=[0.5, 1.0]), dm)
    pool = aug.pool
    assert len(pool) == 3 * len(train)
    assert torch.equal(pool.rows, torch.arange(len(train)).repeat_interleave(3))
    assert torch.equal(pool.labels, train.labels.repeat_interleave(3)) and _sources(pool, train).all()
    assert_valid(pool, dm.codec)
    stats = aug.stats()
    assert stats["pool_builds"] == 1 and stats["pool_flows"] == 3 * len(train) and stats["pool_seconds"] > 0
    batch = _batch(dm)
    out = aug(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out.rows, batch.rows) and torch.equal(out.labels, batch.labels)
    own = pool.x.view(len(train), 3, 3, N_PACKETS)[batch.rows]  # (B, K, 3, L) each flow's own variations
    assert (own == out.x[:, None]).flatten(2).all(2).any(1).all()
    picks = torch.stack(
        [
            (own == aug(batch, torch.Generator().manual_seed(s)).x[:, None]).flatten(2).all(2).float().argmax(1)
            for s in range(20)
        ]
    )  # (20, B) which of its K each draw took
    assert set(picks.flatten().tolist()) == {0, 1, 2}


def test_the_pool_is_remade_every_n_epochs_and_is_seeded(dm: FlowDataModule) -> None:
    aug = _setup(_vary(variations_per_flow=2, refresh_every_n_epochs=2), dm, seed=4)
    first = aug.pool.x.clone()
    g = torch.Generator().manual_seed(9)
    aug.on_epoch_start(0, g)
    aug.on_epoch_start(1, g)
    assert aug.stats()["pool_builds"] == 1 and torch.equal(aug.pool.x, first)
    aug.on_epoch_start(2, g)
    assert aug.stats()["pool_builds"] == 2 and not torch.equal(aug.pool.x, first)
    assert torch.equal(_setup(_vary(variations_per_flow=2), dm, seed=4).pool.x, first)


def test_the_pool_needs_training_rows_and_training_flows(dm: FlowDataModule) -> None:
    aug = _setup(_vary(variations_per_flow=2), dm)
    b = _batch(dm)
    with pytest.raises(ValueError, match="rows"):
        aug(FlowBatch(b.x, b.lengths, b.labels), torch.Generator())
    with pytest.raises(TsdaError, match="train_flows"):
        _vary(variations_per_flow=2).setup(_context(dm, FakeSampler(), train=False))


def test_prepare_augmentation_gives_the_datamodules_training_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    from tsda.generators import base as generative

    monkeypatch.setattr(generative, "load_generative", lambda path, map_location: FakeSampler())
    fresh = datamodule()  # not set up: prepare_augmentation encodes the training split
    aug = _vary(variations_per_flow=2)
    generative.prepare_augmentation(
        aug, device=torch.device("cpu"), class_names=fresh.class_names, generator=torch.Generator(), datamodule=fresh
    )
    assert len(aug.pool) == 2 * len(fresh.tensors["train"])


# -- composition with hand-crafted augmentations -------------------------------------------------
def test_compose_variation_then_wrap(dm: FlowDataModule) -> None:
    aug = _setup(Compose([_vary(variations_per_flow=2, refresh_every_n_epochs=1), Wrap(0.3)]), dm)
    batch = _batch(dm)
    out = aug(batch, torch.Generator().manual_seed(0))
    assert_valid(out, like=batch)
    assert torch.equal(out.rows, batch.rows) and torch.equal(out.labels, batch.labels)
    assert torch.equal(aug(batch, torch.Generator().manual_seed(0)).x, out.x)
    for a in aug.walk():  # the run hooks as the classifier calls them, reaching the nested augmentation
        a.on_epoch_start(1, torch.Generator().manual_seed(5))
    stats = {k: v for a in aug.walk() for k, v in a.stats().items()}
    assert stats["pool_flows"] == 2 * len(dm.tensors["train"]) and stats["pool_builds"] == 2


@pytest.mark.parametrize("pooled", [False, True])
def test_one_of_variation_or_wrap_per_flow(dm: FlowDataModule, pooled: bool) -> None:
    aug = _setup(OneOf([_vary(variations_per_flow=2 if pooled else 0, strength=1.0), Wrap(0.3)]), dm)
    batch = _batch(dm, 128)
    out = aug(batch, torch.Generator().manual_seed(0))
    assert_valid(out, like=batch)
    assert torch.equal(out.rows, batch.rows)  # rows kept through apply_each's subsets
    varied = _sources(out, dm.tensors["train"]) & (out.x[:, IAT] != batch.x[:, IAT]).any(1)
    assert 0.3 < varied.float().mean() < 0.7
    assert torch.equal(aug(batch, torch.Generator().manual_seed(0)).x, out.x)


@pytest.mark.parametrize("pooled", [False, True])
def test_random_apply_a_variation_with_probability_p(dm: FlowDataModule, pooled: bool) -> None:
    aug = _setup(RandomApply(_vary(variations_per_flow=3 if pooled else 0, strength=1.0), p=0.25), dm)
    batch = _batch(dm, 160)
    out = aug(batch, torch.Generator().manual_seed(0))
    changed = (out.x != batch.x).flatten(1).any(1).float().mean()
    assert torch.equal(out.rows, batch.rows) and 0.12 < changed < 0.4
    assert _sources(out, dm.tensors["train"]).all()


def test_the_classifier_double_policy_keeps_each_flow_beside_its_variation(dm: FlowDataModule) -> None:
    from tsda.classifier.module import ClassifierModule

    aug = _setup(_vary(variations_per_flow=2), dm)
    clf = ClassifierModule(
        num_classes=3,
        class_names=dm.class_names,
        backbone_kwargs={"width": 8},
        augmentation=aug,
        policy="double",
        latent_points=0,
    )
    batch = _batch(dm, 16)
    out = clf.training_batch(batch)
    assert len(out) == 32 and torch.equal(out.x[:16], batch.x)
    assert torch.equal(out.rows, torch.cat([batch.rows, batch.rows]))


# -- option checks ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"mode": "vary", "strength": 1.5}, "strength"),
        ({"mode": "vary", "strength": -0.1}, "strength"),
        ({"mode": "vary", "strength": []}, "strength"),
        ({"mode": "vary", "strength": [0.5, 2.0]}, "strength"),
        ({"mode": "other"}, "mode"),
        ({"mode": "vary", "pool_per_class": 5}, "pool_per_class"),
        ({"variations_per_flow": 2}, "variations_per_flow"),
        ({"mode": "vary", "variations_per_flow": -1}, "variations"),
        ({"mode": "vary", "labels": "balanced"}, "labels"),
        ({"mode": "vary", "refresh_every_n_epochs": 1}, "refresh_every_n_epochs"),
    ],
)
def test_bad_options_name_themselves(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GeneratorAugmentation("x.ckpt", **kwargs)


def test_vary_refuses_a_pool_file_and_generators_that_cannot_vary(dm: FlowDataModule) -> None:
    with pytest.raises(ValueError, match="pool_file"):
        GeneratorAugmentation(pool_file="x.parquet", mode="vary")
    with pytest.raises(TsdaError, match="fake.ckpt.*cannot vary"):
        _setup(_vary(), dm, FakeSampler(can_vary=False))
    with pytest.raises(TsdaError, match="fake.ckpt.*unconditional"):
        _setup(_vary(), dm, FakeSampler(conditional=False))
    plain = FakeSampler()
    del plain.can_vary  # a sampler that does not say it can vary cannot
    with pytest.raises(TsdaError, match="cannot vary"):
        _setup(_vary(), dm, plain)


# -- tsda sample --vary and tsda evaluate of variations, with a tiny cVAE-GAN -----------------------
@pytest.fixture(scope="module")
def cvae(tmp_path_factory: pytest.TempPathFactory, tiny_gan_ckpt: Path) -> dict[str, Path]:
    """A tiny cVAE-GAN checkpoint (it can vary), a plain cGAN one (it cannot) and a real file."""
    from support.tiny import fit_gan

    root = tmp_path_factory.mktemp("vary")
    return {
        "ckpt": fit_gan(root / "cvae", datamodule(), epochs=1, w_recon=10.0)[1],
        "plain": tiny_gan_ckpt,
        "real": write_parquet(class_table(80, seed=3), root / "real.parquet"),
        "root": root,
    }


def _sample(*args: str) -> None:
    from tsda.commands.sample import main

    main([*args, "--no_progress"])


def test_sample_vary_writes_variations_with_their_source_rows(cvae: dict[str, Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from tsda.data.sources import read_parquet

    out = tmp_path / "var.parquet"
    _sample(
        "--ckpt",
        str(cvae["ckpt"]),
        "--vary",
        str(cvae["real"]),
        "--strength",
        "0",
        "0.5",
        "--variations",
        "2",
        "--seed",
        "1",
        "--batch_size",
        "50",
        "--out",
        str(out),
    )
    real = read_parquet(cvae["real"], max_packets=N_PACKETS)
    table = read_parquet(out, max_packets=N_PACKETS, meta_columns=("source_row", "strength"))
    assert len(table) == 4 * len(real)
    source, strength = table.meta["source_row"], table.meta["strength"]
    assert source.tolist() == [r for r in range(len(real)) for _ in range(4)]
    assert strength.tolist() == [0.0, 0.0, 0.5, 0.5] * len(real)
    names = [table.class_names[k] for k in table.labels]
    assert names == [real.class_names[real.labels[r]] for r in source]  # each of its source's class
    same = strength == 0
    assert np.array_equal(table.sizes[same], real.sizes[source[same]])  # strength 0: the flow itself
    assert not np.array_equal(table.sizes[~same], real.sizes[source[~same]])
    assert set(pq.read_table(out, columns=["generator"]).column(0).to_pylist()) == {f"GANModule:{cvae['ckpt']}"}
    again = tmp_path / "again.parquet"
    _sample(
        "--ckpt",
        str(cvae["ckpt"]),
        "--vary",
        str(cvae["real"]),
        "--strength",
        "0",
        "0.5",
        "--variations",
        "2",
        "--seed",
        "1",
        "--batch_size",
        "50",
        "--out",
        str(again),
    )
    assert pq.read_table(out).equals(pq.read_table(again))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--strength", "1.5"], "--strength must be in"),
        (["--strength", "0.5", "--per_class", "3"], "--per_class"),
        (["--strength", "0.5", "--label_with", "x.ckpt"], "--label_with"),
        ([], "--strength"),
        (["--strength", "0.5", "--variations", "0"], "--variations"),
    ],
)
def test_sample_vary_refuses_bad_options(cvae: dict[str, Path], tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "x.parquet"
    with pytest.raises(TsdaError, match=message):
        _sample("--ckpt", str(cvae["ckpt"]), "--vary", str(cvae["real"]), *extra, "--out", str(out))
    assert not out.exists()


def test_sample_vary_refuses_files_and_generators_it_cannot_vary(
    cvae: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tsda.cli import main

    other = class_table(5, seed=1)
    other.class_names = ("a", "b", "c")
    cases = [
        (cvae["plain"], cvae["real"], "cannot vary"),
        (cvae["ckpt"], write_parquet(other, tmp_path / "other.parquet"), "other.parquet.*does not know"),
        (
            cvae["ckpt"],
            write_parquet(class_table(5, seed=1, packets=20), tmp_path / "long.parquet"),
            "long.parquet.*longer than the generator's 12 packets",
        ),
    ]
    out = tmp_path / "x.parquet"
    for ckpt, data, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "sample",
                    "--ckpt",
                    str(ckpt),
                    "--vary",
                    str(data),
                    "--strength",
                    "0.5",
                    "--out",
                    str(out),
                    "--no_progress",
                ]
            )
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("tsda: error: ") and re.search(message, err), err
        assert not out.exists()
    _sample(
        "--ckpt",
        str(cvae["ckpt"]),
        "--vary",
        str(tmp_path / "long.parquet"),
        "--strength",
        "0.5",
        "--truncate",
        "--out",
        str(out),
    )
    assert out.is_file()
    with pytest.raises(TsdaError, match="--strength: needs --vary"):
        _sample("--ckpt", str(cvae["ckpt"]), "--n", "3", "--strength", "0.5", "--out", str(tmp_path / "y.parquet"))


def test_evaluate_reports_the_distance_of_variations_to_their_sources(cvae: dict[str, Path], tmp_path: Path) -> None:
    from tsda.commands.evaluate import main as evaluate

    varied = tmp_path / "var.parquet"
    _sample(
        "--ckpt",
        str(cvae["ckpt"]),
        "--vary",
        str(cvae["real"]),
        "--strength",
        "0",
        "0.5",
        "1",
        "--seed",
        "0",
        "--out",
        str(varied),
    )
    options = [
        "--synthetic",
        str(varied),
        "--tstr_seeds",
        "0",
        "--gru",
        "false",
        "--plots",
        "false",
        "--data.min_packets",
        "3",
        "--data.min_class_size",
        "5",
        "--data.n_packets",
        str(N_PACKETS),
    ]
    evaluate(["--data.path", str(cvae["real"]), "--out", str(tmp_path / "fid"), *options])
    result = json.loads((tmp_path / "fid" / "fidelity.json").read_text())
    assert "memorisation_input" in result and "marginals" in result  # what any generated set gets
    v = result["variation"]
    assert v["n_variations"] == 720 and v["n_sources"] == 240 and 0.7 < v["sources_in_train"] < 0.9
    by = v["by_strength"]
    assert set(by) == {"0", "0.5", "1"} and by["0"]["n"] == 240
    assert by["0"]["mean_source_distance"] < 1e-4 and by["0"]["share_nearer_source"] == 1.0
    assert by["0"]["mean_nn_other_train"] > 0.05  # its source left out: the nearest other flow
    assert by["0"]["mean_source_distance"] < by["0.5"]["mean_source_distance"] < by["1"]["mean_source_distance"]
    shuffled = class_table(80, seed=9)
    shuffled = shuffled.take(np.random.default_rng(0).permutation(len(shuffled)))
    for other, message in ((class_table(20, seed=9), "source_row 60 is no row"), (shuffled, "another class")):
        path = write_parquet(other, tmp_path / "other.parquet")
        with pytest.raises(TsdaError, match=message):  # another file than the one varied
            evaluate(["--data.path", str(path), "--out", str(tmp_path / "fid2"), *options])
