"""Diffusion generator: denoiser shapes, a real-Trainer fit, seeded sampling, validity,
classifier-free and classifier-latent guidance."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from tsda.augment.validity import assert_valid
from tsda.classifier.module import ClassifierModule
from tsda.data.batch import DIRECTION, FlowBatch
from tsda.data.datamodule import FlowDataModule
from tsda.data.sources import write_parquet
from tsda.data.table import FlowTable
from tsda.generators.base import load_generative
from tsda.generators.diffusion.module import DiffusionModule
from tsda.generators.diffusion.nets import FlowDenoiser
from tsda.generators.diffusion.sampling import (
    MODEL_CHANNELS,
    PRESENCE,
    from_model_space,
    make_scheduler,
    predict_x0,
    presence_lengths,
    snap_model_space,
    to_model_space,
)

L_PACKETS = 8


def separable_table(n_per_class: int = 120, packets: int = 12, seed: int = 0) -> FlowTable:
    """Two classes a classifier separates at once: class `up` sends small packets
    upstream with short gaps, class `down` receives large packets with long gaps."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per_class
    labels = np.repeat([0, 1], n_per_class)
    down = labels[:, None] == 1  # (N, 1)
    sizes = np.where(down, rng.integers(1200, 1460, (n, packets)), rng.integers(40, 200, (n, packets)))
    directions = np.broadcast_to(down, (n, packets)).astype(np.int8)
    gaps = np.where(down, rng.uniform(0.2, 1.0, (n, packets)), rng.uniform(1e-4, 1e-3, (n, packets)))
    gaps[:, 0] = 0.0
    lengths = np.full(n, packets, dtype=np.int64)
    return FlowTable(
        labels=labels,
        class_names=("up", "down"),
        sizes=sizes.astype(float),
        directions=directions,
        times=np.cumsum(gaps, axis=1),
        lengths=lengths,
        packets=lengths.copy(),
    )


def trainer(root: Path, epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> FlowDataModule:
    path = write_parquet(separable_table(), tmp_path_factory.mktemp("data") / "flows.parquet")
    return FlowDataModule(
        path=str(path), n_packets=L_PACKETS, min_packets=5, min_class_size=5, batch_size=32, eval_batch_size=64
    )


@pytest.fixture(scope="module")
def classifier_ckpt(datamodule: FlowDataModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classifier trained for three epochs on the separable data."""
    root = tmp_path_factory.mktemp("clf")
    torch.manual_seed(0)
    model = ClassifierModule(
        num_classes=2, class_names=["up", "down"], backbone_kwargs={"width": 8}, lr=1e-2, latent_points=0
    )
    fit = trainer(root, epochs=3)
    fit.fit(model, datamodule=datamodule)
    path = root / "clf.ckpt"
    fit.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def fitted(
    datamodule: FlowDataModule, classifier_ckpt: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DiffusionModule, Path, dict[str, torch.Tensor]]:
    """A tiny diffusion model fitted for a few epochs through the real Trainer, with the
    guiding classifier; returns the module, its checkpoint and its initial weights."""
    root = tmp_path_factory.mktemp("diffusion")
    torch.manual_seed(0)
    model = DiffusionModule(
        num_classes=2,
        class_names=["up", "down"],
        n_packets=L_PACKETS,
        block_out_channels=(16, 32),
        classifier_ckpt=str(classifier_ckpt),
        ema_decay=0.9,
        lr=3e-3,
        label_dropout=0.2,
    )
    initial = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    fit = trainer(root, epochs=3)
    fit.fit(model, datamodule=datamodule)
    path = root / "diffusion.ckpt"
    fit.save_checkpoint(path)
    return model, path, initial


# -- denoiser ---------------------------------------------------------------------------
@pytest.mark.parametrize("length", [8, 13, 20, 32])
@pytest.mark.parametrize("levels", [(8, 16), (8, 16, 32)])
def test_denoiser_keeps_shape_for_any_length(length: int, levels: tuple[int, ...]) -> None:
    net = FlowDenoiser(num_classes=3, block_out_channels=levels, latent_dim=4)
    x = torch.randn(2, 3, length)
    out = net(x, torch.tensor([0, 999]), torch.tensor([0, net.null_label]), torch.randn(2, 4))
    assert out.shape == (2, 3, length)
    assert net.length_multiple == 2 ** (len(levels) - 1)


def test_denoiser_conditioning_changes_the_output() -> None:
    torch.manual_seed(0)
    net = FlowDenoiser(num_classes=3, block_out_channels=(8, 16), latent_dim=4)
    x, t = torch.randn(1, 3, 20), torch.tensor([10])
    by_label = [net(x, t, torch.tensor([k])) for k in range(4)]
    assert all(not torch.allclose(by_label[0], o) for o in by_label[1:])
    z = torch.randn(1, 4)
    assert not torch.allclose(net(x, t, torch.tensor([0]), z), by_label[0])


def test_denoiser_bad_parameters_raise() -> None:
    with pytest.raises(ValueError, match="block_out_channels"):
        FlowDenoiser(num_classes=2, block_out_channels=(8,))
    with pytest.raises(ValueError, match="block_out_channels"):
        FlowDenoiser(num_classes=2, block_out_channels=(12, 24))
    with pytest.raises(ValueError, match="latents"):
        FlowDenoiser(num_classes=2, block_out_channels=(8, 16))(
            torch.zeros(1, 3, 8), torch.tensor([1]), torch.tensor([0]), torch.zeros(1, 4)
        )


# -- sampling building blocks -----------------------------------------------------------
def test_model_space_round_trip_and_range() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 20, generator=g)
    x[:, DIRECTION] = torch.where(x[:, DIRECTION] > 0.5, 1.0, -1.0)
    lengths = torch.randint(1, 21, (16,), generator=g)  # (B,)
    x = x * (torch.arange(20)[None, :] < lengths[:, None])[:, None]  # zero padding at the end
    m = to_model_space(x)
    assert m.shape == (16, MODEL_CHANNELS, 20)
    assert m.min() >= -1 and m.max() <= 1
    assert torch.equal((m[:, PRESENCE] > 0).sum(dim=1), lengths)
    torch.testing.assert_close(from_model_space(m), x)
    torch.testing.assert_close(snap_model_space(m), x)


def test_presence_channel_keeps_the_length_of_uncertain_directions() -> None:
    """Regression: lengths were read from |direction| >= 0.5, so a packet whose direction
    the model was unsure of (x0 near 0) ended the flow. Now the length is the monotone
    mask agreeing best with the presence channel and the direction only its sign."""
    m = torch.zeros(3, MODEL_CHANNELS, 6)  # (B, 4, L)
    m[:, DIRECTION] = torch.tensor([[0.9, -0.1, 0.05, -0.8, 0.2, 0.7]] * 3)
    m[0, PRESENCE] = torch.tensor([0.9, 0.6, 0.3, 0.8, -0.7, -0.9])  # 4 packets
    m[1, PRESENCE] = torch.tensor([0.9, -0.2, 0.8, 0.8, 0.9, 0.9])  # an isolated dip: 6 packets
    m[2, PRESENCE] = torch.tensor([-0.9, -0.8, 0.1, -0.8, -0.9, -0.9])  # no packet
    assert presence_lengths(m[:, PRESENCE]).tolist() == [4, 6, 0]
    x = snap_model_space(m)  # (3, 3, 6)
    torch.testing.assert_close(x[0, DIRECTION], torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 0.0]))
    torch.testing.assert_close(x[1, DIRECTION], torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0]))
    codec = DiffusionModule(num_classes=2, n_packets=6, block_out_channels=(8, 16)).codec
    # a flow has at least one packet: "no packet" snaps to a valid one-packet flow
    snapped = codec.snap(x)
    assert snapped.lengths.tolist() == [4, 6, 1]
    assert_valid(snapped, codec)
    with pytest.raises(ValueError, match="model-space"):
        from_model_space(torch.zeros(1, 3, 6))


def test_warmup_ramps_the_learning_rate_linearly() -> None:
    module = DiffusionModule(num_classes=2, block_out_channels=(8, 16), lr=1e-2, warmup_steps=4)
    config = module.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(rates, [2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2])
    with pytest.raises(ValueError, match="warmup_steps"):
        DiffusionModule(num_classes=2, warmup_steps=-1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_inverts_the_forward_process(prediction_type: str) -> None:
    module = DiffusionModule(num_classes=2, block_out_channels=(8, 16), prediction_type=prediction_type)
    sched = module.scheduler
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(4, 3, 8, generator=g), torch.randn(4, 3, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = sched.add_noise(x0, noise, t)
    target = noise if prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
    for i in range(4):
        est = predict_x0(target[i : i + 1], x_t[i : i + 1], sched.alphas_cumprod[t[i]], prediction_type)
        torch.testing.assert_close(est, x0[i : i + 1], atol=2e-3, rtol=1e-3)


def test_bad_sampling_parameters_raise() -> None:
    config = DiffusionModule(num_classes=2, block_out_channels=(8, 16)).scheduler_config
    with pytest.raises(ValueError, match="sampler"):
        make_scheduler(config, "euler", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        make_scheduler(config, "ddim", 0)
    with pytest.raises(
        ValueError,
        match=r"model\.prediction_type must be one of \('epsilon', 'v_prediction'\), "
        r"got 'sample'",
    ):
        DiffusionModule(num_classes=2, prediction_type="sample")
    with pytest.raises(ValueError, match="label_dropout"):
        DiffusionModule(num_classes=2, label_dropout=1.0)
    with pytest.raises(ValueError, match="latent_conditioning"):
        DiffusionModule(num_classes=2, latent_conditioning=True)
    module = DiffusionModule(num_classes=2, block_out_channels=(8, 16))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="cfg_scale"):
        module.sample(torch.tensor([0]), g, steps=2, cfg_scale=-1.0)
    with pytest.raises(ValueError, match="latent_guidance_scale"):
        module.sample(torch.tensor([0]), g, steps=2, latent_guidance_scale=1.0)
    with pytest.raises(TypeError):
        module.sample(torch.tensor([0]), g, steps=2, temperature=1.0)


# -- training and sampling --------------------------------------------------------------
def test_fit_trains_the_denoiser_and_its_ema(fitted: tuple[DiffusionModule, Path, dict]) -> None:
    model, _, initial = fitted
    trained = model.denoiser.state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)
    ema = model.ema.module.state_dict()
    assert any(not torch.equal(ema[k], trained[k]) for k in trained)  # an average, not a copy
    assert int(model.ema.n_averaged) > 0
    assert float(model.trainer.callback_metrics["train_loss"]) < 1.0  # below the loss of predicting 0
    counts = model.latent_count
    assert torch.all(counts > 0) and model.latent_centroids.shape == (2, model.classifier.net.latent_dim)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_ode_sampling_is_deterministic_from_a_seed(fitted: tuple[DiffusionModule, Path, dict], sampler: str) -> None:
    model = fitted[0]
    labels = torch.tensor([0, 1, 1, 0])

    def draw(seed: int) -> FlowBatch:
        return model.sample(labels, torch.Generator().manual_seed(seed), steps=5, sampler=sampler)

    a, b, c = draw(3), draw(3), draw(4)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert torch.equal(a.labels, labels)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize(
    "options",
    [
        {"sampler": "ddim", "steps": 4},
        {"sampler": "ddpm", "steps": 6},
        {"sampler": "ddim", "steps": 4, "cfg_scale": 3.0},
        {"sampler": "ddim", "steps": 4, "latent_guidance_scale": 5.0},
        {"sampler": "dpmpp", "steps": 4},
        {"sampler": "dpmpp", "steps": 3, "cfg_scale": 2.0, "latent_guidance_scale": 1.0},
    ],
)
def test_samples_are_valid_flows(fitted: tuple[DiffusionModule, Path, dict], options: dict) -> None:
    labels = torch.tensor([0, 1] * 8)
    batch = fitted[0].sample(labels, torch.Generator().manual_seed(0), **options)
    assert batch.x.shape == (16, 3, L_PACKETS)
    assert_valid(batch)


def test_every_hparam_is_an_init_argument(fitted: tuple[DiffusionModule, Path, dict]) -> None:
    """Regression: `scheduler_config` was stored in hparams, so resuming a fit with
    `tsda fit --ckpt_path` (LightningCLI re-parses the checkpoint's hparams as init
    arguments) failed with an unexpected keyword argument."""
    init_args = set(inspect.signature(DiffusionModule.__init__).parameters)
    _, path, _ = fitted
    saved = torch.load(path, weights_only=False)["hyper_parameters"]
    assert set(saved) - {"_class_path", "_instantiator"} <= init_args
    assert "classifier_hparams" in saved  # the classifier still travels with the checkpoint


def test_checkpoint_samples_without_the_classifier_file(
    fitted: tuple[DiffusionModule, Path, dict], classifier_ckpt: Path, tmp_path: Path
) -> None:
    model, path, _ = fitted
    moved = tmp_path / "clf_moved.ckpt"
    classifier_ckpt.rename(moved)  # the diffusion checkpoint must not need it
    try:
        loaded = load_generative(path)
    finally:
        moved.rename(classifier_ckpt)
    assert isinstance(loaded, DiffusionModule)
    assert torch.load(path, weights_only=False)["scheduler_config"]["prediction_type"] == "epsilon"
    labels = torch.tensor([0, 1, 0])
    options = {"steps": 4, "latent_guidance_scale": 2.0}
    a = model.sample(labels, torch.Generator().manual_seed(5), **options)
    b = loaded.sample(labels, torch.Generator().manual_seed(5), **options)
    torch.testing.assert_close(a.x, b.x)


def _confidence(model: DiffusionModule, batch: FlowBatch) -> float:
    with torch.no_grad():
        probs = model.classifier(batch.x).softmax(dim=1)  # (B, K)
    return float(probs.gather(1, batch.labels[:, None]).mean())


@pytest.mark.parametrize(
    "weights", [{"class_weight": 1.0, "latent_weight": 0.0}, {"class_weight": 0.0, "latent_weight": 1.0}]
)
def test_latent_guidance_raises_the_classifier_confidence(
    fitted: tuple[DiffusionModule, Path, dict], weights: dict[str, float]
) -> None:
    """Same seed, same weakly-trained model: guided samples look more like their class to
    the classifier than unguided ones (`cfg_scale=0`: the denoiser ignores the label, so
    only guidance can make the flows class-specific)."""
    model = fitted[0]
    labels = torch.tensor([0, 1] * 16)

    def confidence(scale: float) -> float:
        batch = model.sample(
            labels, torch.Generator().manual_seed(0), steps=10, cfg_scale=0.0, latent_guidance_scale=scale, **weights
        )
        return _confidence(model, batch)

    unguided, guided = confidence(0.0), confidence(10.0)
    assert guided > unguided + 0.1, (unguided, guided)


def test_latent_conditioned_fit_and_sample(datamodule: FlowDataModule, classifier_ckpt: Path, tmp_path: Path) -> None:
    """With `latent_conditioning` the denoiser takes the classifier latent; sampling
    conditions on the class centroids learnt during the fit (v-prediction here)."""
    torch.manual_seed(0)
    model = DiffusionModule(
        num_classes=2,
        n_packets=L_PACKETS,
        block_out_channels=(8, 16),
        classifier_ckpt=str(classifier_ckpt),
        latent_conditioning=True,
        prediction_type="v_prediction",
    )
    assert model.denoiser.latent_proj is not None
    trainer(tmp_path, epochs=1).fit(model, datamodule=datamodule)
    centroids = model.latent_centroids
    assert centroids is not None and not torch.allclose(centroids[0], centroids[1])
    batch = model.sample(torch.tensor([0, 1, 0, 1]), torch.Generator().manual_seed(0), steps=3, cfg_scale=2.0)
    assert_valid(batch)


def test_sampling_a_class_never_seen_in_training_warns(classifier_ckpt: Path) -> None:
    """No silent zero centroid: latent-conditioned or latent-guided sampling of a class the
    training never showed names it in a warning (its centroid is the zero vector)."""
    torch.manual_seed(0)
    model = DiffusionModule(
        num_classes=2,
        class_names=["up", "down"],
        n_packets=L_PACKETS,
        block_out_channels=(8, 16),
        classifier_ckpt=str(classifier_ckpt),
        latent_conditioning=True,
    )
    model.train()
    up = FlowBatch(torch.zeros(3, 3, L_PACKETS), torch.full((3,), L_PACKETS), torch.zeros(3, dtype=torch.long))
    up.x[:, DIRECTION] = 1.0
    model._latents(up)  # training-mode latents add to the class sums: "up" seen 3 times
    assert model.latent_count.tolist() == [3.0, 0.0]
    assert not model.classifier.training, "the frozen guide stays in eval mode"
    with pytest.warns(
        UserWarning,
        match=r"DiffusionModule\.sample: classes never seen in training: \['down'\]; "
        r"their target latent is the zero vector",
    ):
        model.sample(torch.tensor([0, 1]), torch.Generator().manual_seed(0), steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.sample(torch.tensor([0, 0]), torch.Generator().manual_seed(0), steps=1)
        # given target latents: no centroid is used
        model.sample(
            torch.tensor([1]),
            torch.Generator().manual_seed(0),
            steps=1,
            target_latents=torch.zeros(1, model.classifier.latent_dim),
        )


def test_class_sums_add_up_over_ranks_since_a_snapshot() -> None:
    """`ClassSums.all_reduce` (the DDP step of the diffusion centroids) adds every rank's
    increments since the epoch's snapshot; with one process it changes nothing."""
    from tsda.generators.guide import ClassSums

    class TwoRanks:  # a stand-in strategy: the other rank added the same
        world_size = 2

        def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
            assert reduce_op == "sum"
            return 2 * tensor

    sums = ClassSums(torch.tensor([1.0, 0.0]), {"z": torch.ones(2, 3)})
    start = sums.clone()
    sums.add(torch.tensor([1, 1]), {"z": torch.ones(2, 3)})
    one = sums.clone()
    one.all_reduce(object(), since=start)  # no world_size: one process
    assert torch.equal(one.n, sums.n)
    sums.all_reduce(TwoRanks(), since=start)
    assert sums.n.tolist() == [1.0, 4.0]
    torch.testing.assert_close(sums.sums["z"][1], torch.full((3,), 5.0))
    torch.testing.assert_close(sums.mean("z"), torch.tensor([[1.0] * 3, [1.25] * 3]))
    assert sums.sparse(min_flows=2) == [0] and sums.sparse(among=torch.tensor([1, 1])) == []
