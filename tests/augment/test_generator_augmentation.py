"""A trained generator as a classifier's augmentation: pools, label policies, `tsda fit`
from YAML with a cGAN and a diffusion checkpoint, determinism and bad checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.tiny import N_PACKETS, TINY_GAN, class_table, trainer

from tsda.augment.base import AugmentContext, RandomApply
from tsda.augment.catalog import build_augmentation
from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.validity import assert_valid
from tsda.classifier.module import ClassifierModule
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.datamodule import FlowDataModule
from tsda.data.sources import write_parquet
from tsda.data.table import FlowTable
from tsda.errors import TsdaError
from tsda.generators.base import load_generative, prepare_augmentation
from tsda.generators.diffusion.module import DiffusionModule
from tsda.generators.gan.module import GANModule

ROOT = Path(__file__).resolve().parents[2]
GENERATOR_YAML = str(ROOT / "configs/augment/generator.yaml")
DATA_ARGS = [
    "--data.n_packets",
    str(N_PACKETS),
    "--data.min_packets",
    "3",
    "--data.min_class_size",
    "5",
    "--data.batch_size",
    "32",
    "--data.eval_batch_size",
    "64",
]


def _concat(tables: list[FlowTable]) -> FlowTable:
    import numpy as np

    return FlowTable(
        labels=np.concatenate([t.labels for t in tables]),
        class_names=tables[0].class_names,
        sizes=np.concatenate([t.sizes for t in tables]),
        directions=np.concatenate([t.directions for t in tables]),
        times=np.concatenate([t.times for t in tables]),
        lengths=np.concatenate([t.lengths for t in tables]),
        packets=np.concatenate([t.packets for t in tables]),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-class Parquet file, tiny generators trained on it (cGAN, diffusion), a classifier
    checkpoint, and generators with other classes / another codec (for the error cases)."""
    root = tmp_path_factory.mktemp("genaug")
    data = write_parquet(_concat([class_table(100, seed=s) for s in (0, 1)]), root / "flows.parquet")
    dm = FlowDataModule(path=str(data), n_packets=N_PACKETS, min_packets=3, min_class_size=5, batch_size=32)
    dm.setup("fit")
    out = {"data": data, "root": root}

    def fit(name: str, model, datamodule: FlowDataModule, epochs: int = 2) -> Path:
        run = trainer(root / name, epochs, limit_val_batches=0)
        run.fit(model, datamodule=datamodule)
        path = root / f"{name}.ckpt"
        run.save_checkpoint(path)
        return path

    torch.manual_seed(0)
    out["cgan"] = fit(
        "cgan", GANModule(num_classes=3, class_names=dm.class_names, n_packets=N_PACKETS, w_recon=10.0, **TINY_GAN), dm
    )
    out["diffusion"] = fit(
        "diffusion",
        DiffusionModule(num_classes=3, class_names=dm.class_names, n_packets=N_PACKETS, block_out_channels=(8, 16)),
        dm,
        1,
    )
    out["classifier"] = fit(
        "classifier",
        ClassifierModule(num_classes=3, class_names=dm.class_names, backbone_kwargs={"width": 8}, latent_points=0),
        dm,
        1,
    )
    two = write_parquet(_two_classes(class_table(100, seed=5)), root / "two.parquet")
    dm2 = FlowDataModule(path=str(two), n_packets=N_PACKETS, min_packets=3, min_class_size=5, batch_size=32)
    dm2.setup("fit")
    out["other_classes"] = fit(
        "other_classes", GANModule(num_classes=2, class_names=dm2.class_names, n_packets=N_PACKETS, **TINY_GAN), dm2, 1
    )
    dm10 = FlowDataModule(path=str(data), n_packets=10, min_packets=3, min_class_size=5, batch_size=32)
    dm10.setup("fit")
    out["other_codec"] = fit(
        "other_codec", GANModule(num_classes=3, class_names=dm10.class_names, n_packets=10, **TINY_GAN), dm10, 1
    )
    return out


def _two_classes(table: FlowTable) -> FlowTable:
    keep = table.labels < 2
    return FlowTable(
        labels=table.labels[keep],
        class_names=table.class_names[:2],
        sizes=table.sizes[keep],
        directions=table.directions[keep],
        times=table.times[keep],
        lengths=table.lengths[keep],
        packets=table.packets[keep],
    )


def _datamodule(world: dict[str, Path]) -> FlowDataModule:
    dm = FlowDataModule(path=str(world["data"]), n_packets=N_PACKETS, min_packets=3, min_class_size=5, batch_size=32)
    dm.setup("fit")
    return dm


def _prepared(world: dict[str, Path], seed: int = 0, **kwargs) -> tuple[GeneratorAugmentation, FlowDataModule]:
    dm = _datamodule(world)
    aug = GeneratorAugmentation(str(world[kwargs.pop("ckpt", "cgan")]), progress=False, **kwargs)
    prepare_augmentation(
        aug,
        device=torch.device("cpu"),
        class_names=dm.class_names,
        generator=torch.Generator().manual_seed(seed),
        codec=dm.codec,
    )
    return aug, dm


def _train_batch(dm: FlowDataModule, n: int = 48) -> FlowBatch:
    return dm.codec.encode(dm.split_table("train")).index(torch.arange(n))


# -- pools and label policies --------------------------------------------------------------
def test_pool_is_class_balanced_valid_and_drawn_per_class(world: dict[str, Path]) -> None:
    aug, dm = _prepared(world, ckpt="diffusion", pool_per_class=7, options={"sampler": "dpmpp", "steps": 3})
    pool = aug.pool
    assert pool is not None and len(pool) == 21
    assert torch.equal(torch.bincount(pool.labels, minlength=3), torch.tensor([7, 7, 7]))
    assert_valid(pool, dm.codec)
    batch = _train_batch(dm)
    out = aug(batch, torch.Generator().manual_seed(1))
    assert_valid(out, like=batch)  # labels kept: each flow got a pool flow of its own class
    rows = {tuple(r.flatten().tolist()) for r in pool.x}
    assert all(tuple(r.flatten().tolist()) in rows for r in out.x)
    stats = aug.stats()
    assert set(stats) == {"pool_seconds", "pool_builds", "pool_flows"}
    assert stats["pool_builds"] == 1.0 and stats["pool_flows"] == 21.0 and stats["pool_seconds"] > 0


def test_pool_refreshes_every_n_epochs(world: dict[str, Path]) -> None:
    aug, _ = _prepared(world, pool_per_class=5, refresh_every_n_epochs=2)
    g = torch.Generator().manual_seed(3)
    first = aug.pool.x.clone()
    aug.on_epoch_start(0, g)
    aug.on_epoch_start(1, g)
    assert torch.equal(aug.pool.x, first) and aug.stats()["pool_builds"] == 1
    aug.on_epoch_start(2, g)
    assert aug.stats()["pool_builds"] == 2 and not torch.equal(aug.pool.x, first)
    assert torch.equal(torch.bincount(aug.pool.labels, minlength=3), torch.tensor([5, 5, 5]))


def test_fresh_flows_are_generated_not_copied_and_seeded(world: dict[str, Path]) -> None:
    aug, dm = _prepared(world)
    batch = _train_batch(dm)
    a = aug(batch, torch.Generator().manual_seed(0))
    b = aug(batch, torch.Generator().manual_seed(0))
    c = aug(batch, torch.Generator().manual_seed(1))
    assert_valid(a, like=batch)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    real = {tuple(r.flatten().tolist()) for r in dm.codec.encode(dm.split_table("train")).x}
    assert not any(tuple(r.flatten().tolist()) in real for r in a.x)


def test_balanced_labels_draw_classes_uniformly(world: dict[str, Path]) -> None:
    aug, dm = _prepared(world, pool_per_class=4, labels="balanced")
    train = dm.codec.encode(dm.split_table("train"))
    only_class_0 = train.index(train.labels == 0)
    out = aug(only_class_0, torch.Generator().manual_seed(0))
    counts = torch.bincount(out.labels, minlength=3).float()
    assert len(only_class_0) > 100 and (counts / counts.sum() - 1 / 3).abs().max() < 0.12
    assert_valid(out, dm.codec)


def test_inside_random_apply_with_the_replace_policy(world: dict[str, Path]) -> None:
    dm = _datamodule(world)
    aug = RandomApply(GeneratorAugmentation(str(world["cgan"]), progress=False), p=0.5)
    clf = ClassifierModule(
        num_classes=3,
        class_names=dm.class_names,
        backbone_kwargs={"width": 8},
        augmentation=aug,
        policy="replace",
        augment_p=1.0,
        latent_points=0,
    )
    prepare_augmentation(
        aug,
        device=torch.device("cpu"),
        class_names=dm.class_names,
        generator=clf.augmentation_generator(),
        codec=dm.codec,
    )
    batch = _train_batch(dm, 400)
    out = clf.training_batch(batch)
    replaced = (out.x != batch.x).flatten(1).any(1).float().mean()
    assert len(out) == len(batch) and 0.3 < replaced < 0.7
    assert_valid(out, like=batch)


def test_use_before_setup_and_bad_parameters_raise() -> None:
    aug = GeneratorAugmentation("x.ckpt")
    batch = FlowCodec(n_packets=N_PACKETS).encode(class_table(2))
    with pytest.raises(RuntimeError, match="setup"):
        aug(batch, torch.Generator())
    with pytest.raises(ValueError, match="load_sampler"):
        aug.setup(AugmentContext(device=torch.device("cpu"), class_names=("a",), generator=torch.Generator()))
    for kwargs, name in (
        ({"ckpt": ""}, "ckpt"),
        ({"pool_per_class": -1}, "pool_per_class"),
        ({"pool_per_class": 10**7}, "pool_per_class"),
        ({"refresh_every_n_epochs": 2}, "refresh"),
        ({"labels": "odd"}, "labels"),
        ({"sample_batch_size": 0}, "sample_batch_size"),
    ):
        with pytest.raises(ValueError, match=name):
            GeneratorAugmentation(**{"ckpt": "x.ckpt", **kwargs})


def test_checkpoint_errors_name_the_checkpoint(world: dict[str, Path], tmp_path: Path) -> None:
    dm = _datamodule(world)

    def setup(path: Path) -> None:
        prepare_augmentation(
            GeneratorAugmentation(str(path), progress=False),
            device=torch.device("cpu"),
            class_names=dm.class_names,
            generator=torch.Generator(),
            codec=dm.codec,
        )

    with pytest.raises(TsdaError, match="not a generator"):
        setup(world["classifier"])
    with pytest.raises(TsdaError, match="classes"):
        setup(world["other_classes"])
    with pytest.raises(TsdaError, match="codec"):
        setup(world["other_codec"])
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(world["cgan"].read_bytes()[:1000])
    with pytest.raises(TsdaError, match="not a readable checkpoint"):
        setup(truncated)
    with pytest.raises(FileNotFoundError):
        setup(tmp_path / "missing.ckpt")


# -- tsda fit from YAML ----------------------------------------------------------------------
def _fit(world: dict[str, Path], run_dir: Path, ckpt: str, *extra: str, config: str = GENERATOR_YAML) -> dict:
    from tsda.cli import main

    main(
        [
            "fit",
            "-c",
            str(ROOT / "configs/experiment/synthetic_baseline.yaml"),
            "--data.path",
            str(world["data"]),
            *DATA_ARGS,
            "--model.init_args.backbone_kwargs",
            "{width: 8}",
            "--model.init_args.latent_points",
            "0",
            "--model.init_args.augmentation",
            config,
            "--model.init_args.augmentation.init_args.ckpt",
            ckpt,
            "--model.init_args.augmentation.init_args.progress",
            "false",
            "--trainer.max_epochs",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--latent_plot",
            "false",
            "--run_dir",
            str(run_dir),
            *extra,
        ]
    )
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[FlowBatch, FlowBatch, FlowBatch | None]]:
    """(real batch, training batch, pool) of every training step of the next fit."""
    seen: list[tuple[FlowBatch, FlowBatch, FlowBatch | None]] = []
    original = ClassifierModule.training_batch

    def spy(self: ClassifierModule, batch: FlowBatch) -> FlowBatch:
        out = original(self, batch)
        pool = next((a.pool for a in self.augmentation.walk() if isinstance(a, GeneratorAugmentation)), None)
        seen.append((batch, out, None if pool is None else pool.index(torch.arange(len(pool)))))
        return out

    monkeypatch.setattr(ClassifierModule, "training_batch", spy)
    return seen


def test_fit_from_yaml_with_a_cgan_trains_on_generated_flows(
    world: dict[str, Path], tmp_path: Path, recorded: list
) -> None:
    metrics = _fit(world, tmp_path / "run", str(world["cgan"]))
    assert 0.0 <= metrics["test_weighted_f1"] <= 1.0 and metrics["augment_pool_flows"] == 0
    dm = _datamodule(world)
    real = {tuple(r.flatten().tolist()) for r in dm.codec.encode(dm.split_table("train")).x}
    assert recorded
    for batch, train, _ in recorded:
        assert len(train) == 2 * len(batch)  # policy double: B originals + B generated
        assert torch.equal(train.x[: len(batch)], batch.x)
        generated = train.index(torch.arange(len(batch), len(train)))
        assert torch.equal(generated.labels, batch.labels)
        assert_valid(generated, dm.codec)
        assert not any(tuple(r.flatten().tolist()) in real for r in generated.x)


def test_fit_from_yaml_with_a_diffusion_pool_refreshed_each_epoch(
    world: dict[str, Path], tmp_path: Path, recorded: list
) -> None:
    p = "--model.init_args.augmentation.init_args"
    metrics = _fit(
        world,
        tmp_path / "run",
        str(world["diffusion"]),
        f"{p}.pool_per_class",
        "6",
        f"{p}.refresh_every_n_epochs",
        "1",
        f"{p}.options",
        "{sampler: dpmpp, steps: 3, cfg_scale: 2.0}",
    )
    assert metrics["augment_pool_builds"] == 2 and metrics["augment_pool_flows"] == 18
    assert metrics["augment_pool_seconds"] > 0
    pools = []
    for batch, train, pool in recorded:
        assert torch.equal(torch.bincount(pool.labels, minlength=3), torch.tensor([6, 6, 6]))
        rows = {tuple(r.flatten().tolist()) for r in pool.x}
        generated = train.x[len(batch) :]
        assert all(tuple(r.flatten().tolist()) in rows for r in generated)
        if not pools or not torch.equal(pools[-1], pool.x):
            pools.append(pool.x)
    assert len(pools) == 2  # the pool of epoch 0, then the refreshed one of epoch 1


def test_same_seed_same_metrics_with_a_generator(world: dict[str, Path], tmp_path: Path) -> None:
    keys = ("test_weighted_f1", "test_macro_f1", "test_accuracy", "best_score")
    a = _fit(world, tmp_path / "a", str(world["cgan"]), "--seed_everything", "3")
    b = _fit(world, tmp_path / "b", str(world["cgan"]), "--seed_everything", "3")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


@pytest.mark.parametrize(
    "which, message", [("classifier", "not a generator"), ("other_classes", "classes"), ("other_codec", "codec")]
)
def test_fit_refuses_bad_generator_checkpoints_before_training(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, which: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _fit(world, tmp_path / "run", str(world[which]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tsda: error: ") and message in err and str(world[which]) in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_generator_yaml_builds_and_loads_any_generator(world: dict[str, Path]) -> None:
    aug = build_augmentation(
        {
            "class_path": "tsda.augment.generator.GeneratorAugmentation",
            "init_args": {"ckpt": str(world["diffusion"]), "pool_per_class": 2},
        }
    )
    assert isinstance(aug, GeneratorAugmentation) and aug.pool_per_class == 2
    for name in ("cgan", "diffusion"):
        assert load_generative(world[name]).class_names == _datamodule(world).class_names


def test_augment_room_imports_neither_lightning_nor_lit() -> None:
    """`tsda.augment` (the generator augmentation included) loads no Lightning and no
    `tsda.lit`: checkpoints are loaded where modules live (`prepare_augmentation`)."""
    import subprocess
    import sys

    code = (
        "import sys, tsda.augment.catalog, tsda.augment.generator, tsda.augment.enlarge; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning') "
        "or m.startswith('tsda.lit')); print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- a pool from a file of labelled flows ---------------------------------------------------------
def _labelled_file(world: dict[str, Path], path: Path, keep_classes: tuple[int, ...]) -> tuple[Path, FlowTable]:
    """Flows of the classes `keep_classes` only (5 of class 0, 3 of the others), as a Parquet file."""
    import numpy as np

    table = FlowDataModule(path=str(world["data"]), n_packets=N_PACKETS, min_packets=3, min_class_size=5).table
    rows = np.concatenate([np.flatnonzero(table.labels == k)[: 5 if k == 0 else 3] for k in keep_classes])
    part = table.take(rows)
    return write_parquet(part, path), part


def _pool_prepared(world: dict[str, Path], path: Path, **kwargs) -> tuple[GeneratorAugmentation, FlowDataModule]:
    dm = _datamodule(world)
    aug = GeneratorAugmentation(pool_file=str(path), **kwargs)
    prepare_augmentation(
        aug,
        device=torch.device("cpu"),
        class_names=dm.class_names,
        generator=torch.Generator().manual_seed(0),
        codec=dm.codec,
    )
    return aug, dm


def test_pool_file_tiles_each_class_and_absent_classes_keep_their_flows(world: dict[str, Path], tmp_path: Path) -> None:
    path, part = _labelled_file(world, tmp_path / "labelled.parquet", keep_classes=(0, 2))
    aug, dm = _pool_prepared(world, path)
    pool = aug.pool
    assert pool is not None and len(pool) == 15  # 3 classes x 5 slots (the largest class count)
    assert torch.equal(pool.labels, torch.arange(3).repeat_interleave(5))
    file_rows = dm.codec.encode(part)
    for k in (0, 2):
        own = {tuple(r.flatten().tolist()) for r in file_rows.x[file_rows.labels == k]}
        slots = {tuple(r.flatten().tolist()) for r in pool.x[pool.labels == k]}
        assert slots == own  # every file flow of the class has a slot, and only those
    assert aug.stats()["pool_missing_classes"] == 1.0
    batch = dm.codec.encode(dm.split_table("train"))  # every class
    out = aug(batch, torch.Generator().manual_seed(1))
    assert_valid(out, like=batch)
    absent = batch.labels == 1
    assert absent.any() and torch.equal(out.x[absent], batch.x[absent])
    own0 = {tuple(r.flatten().tolist()) for r in file_rows.x[file_rows.labels == 0]}
    assert all(tuple(r.flatten().tolist()) in own0 for r in out.x[batch.labels == 0])
    again = aug(batch, torch.Generator().manual_seed(1))
    assert torch.equal(again.x, out.x)


def test_pool_file_errors_name_the_file(world: dict[str, Path], tmp_path: Path) -> None:
    two = write_parquet(_two_classes(class_table(20, seed=3)), tmp_path / "two.parquet")
    other = FlowTable(
        **{
            **{
                f: getattr(class_table(4, seed=1), f)
                for f in ("labels", "sizes", "directions", "times", "lengths", "packets")
            },
            "class_names": ("zz", "yy", "xx"),
        }
    )
    foreign = write_parquet(other, tmp_path / "foreign.parquet")
    with pytest.raises(TsdaError, match="foreign.parquet.*classes the data lacks"):
        _pool_prepared(world, foreign)
    _pool_prepared(world, two)  # a subset of the data's classes is fine
    for kwargs in ({}, {"ckpt": "x.ckpt", "pool_file": str(two)}, {"pool_file": str(two), "refresh_every_n_epochs": 1}):
        with pytest.raises(ValueError, match="ckpt|pool_file"):
            GeneratorAugmentation(**kwargs)


def test_fit_with_a_pool_file_from_yaml(world: dict[str, Path], tmp_path: Path, recorded: list) -> None:
    from tsda.cli import main

    path, part = _labelled_file(world, tmp_path / "labelled.parquet", keep_classes=(0, 1, 2))
    run_dir = tmp_path / "run"
    main(
        [
            "fit",
            "-c",
            str(ROOT / "configs/experiment/synthetic_baseline.yaml"),
            "--data.path",
            str(world["data"]),
            *DATA_ARGS,
            "--model.init_args.backbone_kwargs",
            "{width: 8}",
            "--model.init_args.latent_points",
            "0",
            "--model.init_args.augmentation",
            str(ROOT / "configs/augment/generator_pool.yaml"),
            "--model.init_args.augmentation.init_args.pool_file",
            str(path),
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--latent_plot",
            "false",
            "--run_dir",
            str(run_dir),
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["augment_pool_flows"] == 15 and metrics["augment_pool_missing_classes"] == 0
    codec = _datamodule(world).codec
    file_flows = {tuple(r.flatten().tolist()) for r in codec.encode(part).x}
    for batch, train, _ in recorded:
        generated = train.x[len(batch) :]
        assert all(tuple(r.flatten().tolist()) in file_flows for r in generated)


@pytest.mark.parametrize("ckpt", ["cgan", "diffusion"])
def test_sampling_inside_autocast_gives_the_full_precision_flows(world: dict[str, Path], ckpt: str) -> None:
    """A generator augmentation samples inside `training_step`, i.e. under the Trainer's
    autocast with `--trainer.precision bf16-mixed`: its flows must be those of full
    precision (float32, the same values), not bf16-coarsened sizes and gaps."""
    aug, dm = _prepared(world, ckpt=ckpt)
    batch = _train_batch(dm, 16)
    plain = aug(batch, torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = aug(batch, torch.Generator().manual_seed(3))
    assert mixed.x.dtype == torch.float32
    assert torch.equal(mixed.x, plain.x)


# -- variations (mode vary) with a real generator: the cVAE-GAN can vary its flows ----------------
def test_fit_from_yaml_with_fresh_variations_of_each_flow(
    world: dict[str, Path], tmp_path: Path, recorded: list
) -> None:
    p = "--model.init_args.augmentation.init_args"
    metrics = _fit(
        world,
        tmp_path / "run",
        str(world["cgan"]),
        f"{p}.variations_per_flow",
        "0",
        config=str(ROOT / "configs/augment/variation.yaml"),
    )
    assert 0.0 <= metrics["test_weighted_f1"] <= 1.0 and metrics["augment_pool_flows"] == 0
    dm = _datamodule(world)
    for batch, train, _ in recorded:
        assert len(train) == 2 * len(batch) and torch.equal(train.x[: len(batch)], batch.x)  # policy double
        varied = train.index(torch.arange(len(batch), len(train)))
        assert torch.equal(varied.labels, batch.labels) and torch.equal(varied.rows, batch.rows)
        assert_valid(varied, dm.codec)
        assert (varied.x != batch.x).flatten(1).any(1).float().mean() > 0.5


def test_fit_from_yaml_with_a_variation_pool(world: dict[str, Path], tmp_path: Path, recorded: list) -> None:
    """`tsda fit` hands the training split to the augmentation: a pool of K variations of
    every training flow is made at fit start and each flow of a batch gets one of its own."""
    p = "--model.init_args.augmentation.init_args"
    metrics = _fit(
        world,
        tmp_path / "run",
        str(world["cgan"]),
        f"{p}.variations_per_flow",
        "2",
        config=str(ROOT / "configs/augment/variation.yaml"),
    )
    train = _datamodule(world).tensors["train"]
    assert metrics["augment_pool_flows"] == 2 * len(train) and metrics["augment_pool_seconds"] > 0
    for batch, trained, _ in recorded:
        varied = trained.index(torch.arange(len(batch), len(trained)))
        assert torch.equal(varied.rows, batch.rows) and torch.equal(varied.labels, batch.labels)


def test_a_variation_pool_of_a_real_generator_draws_each_flows_own(world: dict[str, Path]) -> None:
    dm = _datamodule(world)
    aug = GeneratorAugmentation(
        str(world["cgan"]), mode="vary", strength=[0.25, 0.5], variations_per_flow=2, progress=False
    )
    prepare_augmentation(
        aug,
        device=torch.device("cpu"),
        class_names=dm.class_names,
        generator=torch.Generator().manual_seed(0),
        datamodule=dm,
    )
    train = dm.tensors["train"]
    assert len(aug.pool) == 2 * len(train) and aug.stats()["pool_seconds"] > 0
    assert torch.equal(aug.pool.labels, train.labels.repeat_interleave(2))
    assert_valid(aug.pool, dm.codec)
    batch = train.index(torch.arange(40, 80))
    out = aug(batch, torch.Generator().manual_seed(1))
    own = aug.pool.x.view(len(train), 2, 3, N_PACKETS)[batch.rows]  # (B, 2, 3, L)
    assert (own == out.x[:, None]).flatten(2).all(2).any(1).all()
    with pytest.raises(TsdaError, match="cannot vary"):
        prepare_augmentation(
            GeneratorAugmentation(str(world["other_codec"]), mode="vary", progress=False),
            device=torch.device("cpu"),
            class_names=dm.class_names,
            generator=torch.Generator(),
        )
