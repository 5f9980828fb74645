"""The cGAN: nets, a few-step fit through the real Trainer, guidance, sampling, EMA."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from support.tiny import N_PACKETS, TINY_GAN, class_table, datamodule, fit_classifier, fit_gan

from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.validity import assert_valid
from tsda.callbacks import FidelityCallback
from tsda.classifier.module import ClassifierModule
from tsda.data.batch import DIRECTION, FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.sources import write_parquet
from tsda.generators.base import load_generative, prepare_augmentation
from tsda.generators.gan.module import LEGACY_PRIOR_KEYS, GANModule
from tsda.generators.gan.nets import FlowDiscriminator, FlowEncoder, FlowGenerator

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[GANModule, Path, dict]:
    dm = datamodule()
    torch.manual_seed(0)
    initial = {
        k: v.clone()
        for k, v in GANModule(num_classes=3, n_packets=N_PACKETS, **TINY_GAN).generator.state_dict().items()
    }
    model, path, fit = fit_gan(tmp_path_factory.mktemp("gan"), dm, epochs=2, callbacks=[FidelityCallback(max_flows=40)])
    return model, path, {"initial": initial, "metrics": dict(fit.callback_metrics)}


@pytest.fixture(scope="module")
def guided(tmp_path_factory: pytest.TempPathFactory) -> tuple[GANModule, Path, Path]:
    root = tmp_path_factory.mktemp("guided")
    dm = datamodule()
    clf = fit_classifier(root, dm)
    model, path, _ = fit_gan(
        root, dm, epochs=1, classifier_ckpt=str(clf), w_class=1.0, w_latent=0.1, latent_conditioning=True
    )
    return model, path, clf


# -- nets --------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [4, 12, 20])
@pytest.mark.parametrize("latent_dim", [0, 5])
def test_generator_makes_valid_flows_of_any_length(length: int, latent_dim: int) -> None:
    torch.manual_seed(0)
    gen = FlowGenerator(num_classes=3, n_packets=length, noise_dim=8, width=16, depth=1, latent_dim=latent_dim)
    labels = torch.tensor([0, 1, 2, 1])
    latent = torch.randn(4, latent_dim) if latent_dim else None
    x = gen(torch.randn(4, 8), labels, latent)  # (B, 3, L)
    assert x.shape == (4, 3, length)
    snapped = FlowCodec(n_packets=length).snap(x)
    assert_valid(snapped, FlowCodec(n_packets=length))
    # straight-through output already is a valid flow: snapping changes nothing
    assert torch.equal(snapped.x, x.detach())
    x.sum().backward()  # gradients reach the trunk through the hard direction and mask
    assert gen.stem.weight.grad is not None and gen.stem.weight.grad.abs().sum() > 0


def test_generator_starts_with_full_length_flows() -> None:
    gen = FlowGenerator(num_classes=2, n_packets=20, noise_dim=8, width=16, depth=1)
    x = gen(torch.randn(16, 8), torch.zeros(16, dtype=torch.long))
    assert (x[:, DIRECTION].abs() == 1).all()


def test_every_generator_block_is_class_conditioned() -> None:
    """Regression: the class entered only at the stem's input, where the noise can drown it.
    With the stem blind to the class, the per-block FiLM alone must still tell classes apart,
    and the generator loss must train it."""
    torch.manual_seed(0)
    gen = FlowGenerator(num_classes=3, n_packets=N_PACKETS, noise_dim=8, width=16, depth=2)
    with torch.no_grad():
        gen.stem.weight[:, 8:] = 0.0  # the stem sees only the noise
    noise, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    x0 = gen(noise, torch.zeros_like(labels), straight_through=False)
    assert torch.allclose(x0, gen(noise, labels, straight_through=False))  # FiLM starts as identity
    x0.sum().backward()
    for block in gen.blocks:
        assert block.film.weight.grad.abs().sum() > 0
        with torch.no_grad():
            block.film.weight.normal_(0, 0.5)
    assert not torch.allclose(
        gen(noise, labels, straight_through=False), gen(noise, torch.zeros_like(labels), straight_through=False)
    )


def test_discriminator_scores_depend_on_class_and_latent() -> None:
    torch.manual_seed(0)
    disc = FlowDiscriminator(num_classes=3, width=8, latent_dim=4)
    x = FlowCodec(n_packets=N_PACKETS).encode(class_table(4)).x  # (12, 3, L)
    labels = torch.zeros(len(x), dtype=torch.long)
    score = disc(x, labels)
    assert score.shape == (len(x),)
    assert not torch.allclose(score, disc(x, labels + 1))
    assert not torch.allclose(score, disc(x, labels, torch.randn(len(x), 4)))


def test_encoder_gives_a_class_dependent_gaussian_over_the_noise() -> None:
    torch.manual_seed(0)
    enc = FlowEncoder(num_classes=3, noise_dim=8, width=8)
    x = FlowCodec(n_packets=N_PACKETS).encode(class_table(4)).x  # (12, 3, L)
    labels = torch.zeros(len(x), dtype=torch.long)
    mu, logvar = enc(x, labels)
    assert mu.shape == logvar.shape == (len(x), 8)
    assert not torch.allclose(mu, enc(x, labels + 1)[0])
    assert not torch.allclose(mu[:4], mu[4:8])  # different flows, different posteriors


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"num_classes": 0}, {"latent_dim": -1}])
def test_nets_reject_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FlowGenerator(**{"num_classes": 2, **kwargs})


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"w_class": -1.0}, "w_class"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"n_critic": 0}, "n_critic"),
        ({"w_recon": -1.0}, "w_recon"),
        ({"w_kl": -0.1}, "w_kl"),
        ({"latent_conditioning": True}, "latent_conditioning"),
        ({"class_names": ["a"]}, "class_names"),
    ],
)
def test_module_rejects_bad_parameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GANModule(num_classes=2, **kwargs)


# -- fit, EMA, sampling ------------------------------------------------------------------
def test_fit_trains_generator_and_ema(plain: tuple[GANModule, Path, dict]) -> None:
    model, _, info = plain
    now, ema = model.generator.state_dict(), model.generator_ema.module.state_dict()
    changed = [k for k in now if not torch.equal(now[k], info["initial"][k])]
    assert changed, "the generator's weights did not move"
    assert any(not torch.equal(ema[k], now[k]) for k in now), "EMA is a plain copy"
    assert any(not torch.equal(ema[k], info["initial"][k]) for k in now), "EMA never updated"
    assert torch.isfinite(torch.tensor(float(info["metrics"]["train_loss_d"])))


def test_fidelity_callback_logs_marginal_distances(plain: tuple[GANModule, Path, dict]) -> None:
    metrics = plain[2]["metrics"]
    for key in ("fidelity/size_w1", "fidelity/iat_js", "fidelity/length_w1", "fidelity/mean_js"):
        assert key in metrics
    assert 0.0 <= float(metrics["fidelity/mean_js"]) <= 1.0


def test_samples_are_valid_and_deterministic(plain: tuple[GANModule, Path, dict]) -> None:
    model = plain[0]
    labels = torch.tensor([0, 1, 2] * 20)

    def draw(seed: int) -> FlowBatch:
        return model.sample(labels, torch.Generator().manual_seed(seed))

    a, b, c = draw(3), draw(3), draw(4)
    assert_valid(a, model.codec, num_classes=3)
    assert torch.equal(a.labels, labels)
    assert torch.equal(a.x, b.x) and torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.x, c.x)
    with pytest.raises(TypeError):
        model.sample(labels, torch.Generator(), steps=10)


def test_checkpoint_loads_without_knowing_its_class(plain: tuple[GANModule, Path, dict]) -> None:
    model, path, _ = plain
    loaded = load_generative(path)
    assert type(loaded) is GANModule and loaded.class_names == ["small_up", "big_down", "mixed"]
    labels = torch.tensor([0, 1, 2, 2])
    same = [m.sample(labels, torch.Generator().manual_seed(0)).x for m in (model, loaded)]
    assert torch.equal(*same)


def test_fit_rejects_a_codec_unlike_the_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="codec"):
        fit_gan(tmp_path, datamodule(), epochs=1, mtu=1000.0)


def test_guidance_weights_need_a_classifier(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="classifier_ckpt"):
        fit_gan(tmp_path, datamodule(), epochs=1, w_class=1.0)


# -- latent guidance ---------------------------------------------------------------------
def test_class_regions_are_the_classifiers_latent_statistics(guided: tuple[GANModule, Path, Path]) -> None:
    model, _, clf_path = guided
    clf = ClassifierModule.load_from_checkpoint(clf_path, map_location="cpu").eval()
    train = datamodule().split_table("train")
    batch = FlowCodec(n_packets=N_PACKETS).encode(train)
    with torch.no_grad():
        z = clf.encode(batch.x)  # (N, D)
    for k in range(3):
        zk = z[batch.labels == k]
        torch.testing.assert_close(model.class_mu[k], zk.mean(0), atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(
            model.class_sigma[k], zk.std(0, unbiased=False).clamp_min(1e-3), atol=1e-4, rtol=1e-2
        )


def test_guidance_losses_reward_the_right_region(guided: tuple[GANModule, Path, Path]) -> None:
    model = guided[0]
    real = FlowCodec(n_packets=N_PACKETS).encode(class_table(10, seed=5))
    right = model.guidance_losses(real.x, real.labels, None)
    wrong = model.guidance_losses(real.x, (real.labels + 1) % 3, None)
    assert right["latent"] < wrong["latent"]
    assert right["class"] < wrong["class"]


def test_sampling_latents_are_real_latents_of_the_class(guided: tuple[GANModule, Path, Path]) -> None:
    """Regression: sampling conditioned on diagonal-Gaussian draws (negative entries in a ReLU
    latent) while training conditioned on real latents; now both use real latents."""
    model, _, clf_path = guided
    clf = ClassifierModule.load_from_checkpoint(clf_path, map_location="cpu").eval()
    batch = FlowCodec(n_packets=N_PACKETS).encode(datamodule().split_table("train"))
    with torch.no_grad():
        z = clf.encode(batch.x)  # (N, D)
    labels = torch.tensor([0, 1, 2] * 20)
    latent = model._class_latent(labels, torch.Generator().manual_seed(0))  # (60, D)
    assert (model.class_bank_n == 60).all()
    for lat, k in zip(latent, labels):
        assert torch.isclose(z[batch.labels == k], lat, atol=1e-5).all(dim=1).any()
    torch.testing.assert_close(model._class_latent(labels, torch.Generator(), scale=0.0), model.class_mu[labels])


def test_guided_checkpoint_samples_without_the_classifier(guided: tuple[GANModule, Path, Path], tmp_path: Path) -> None:
    _, path, clf_path = guided
    moved = tmp_path / "elsewhere.ckpt"
    clf_path.rename(moved)  # the guide is a training-time dependency only
    try:
        loaded = load_generative(path)
        assert loaded.guide is None and loaded.hparams.latent_conditioning
        out = loaded.sample(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0), latent_scale=0.5)
        assert_valid(out, loaded.codec)
    finally:
        moved.rename(clf_path)


# -- as an augmentation ------------------------------------------------------------------
def test_generator_augmentation_plugs_into_the_classifier(plain: tuple[GANModule, Path, dict]) -> None:
    aug = GeneratorAugmentation(str(plain[1]))
    batch = FlowCodec(n_packets=N_PACKETS).encode(class_table(5, seed=3))
    prepare_augmentation(
        aug,
        device=torch.device("cpu"),
        class_names=plain[0].class_names,
        generator=torch.Generator(),
        codec=plain[0].codec,
    )
    out = aug(batch, torch.Generator().manual_seed(0))
    assert_valid(out, like=batch)
    clf = ClassifierModule(num_classes=3, backbone_kwargs={"width": 8}, augmentation=aug, latent_points=0)
    assert len(clf.training_batch(batch)) == 2 * len(batch)
    with pytest.raises(ValueError, match="ckpt"):
        GeneratorAugmentation("")


# -- the CLI and the shipped configs -------------------------------------------------------
def test_tsda_fit_trains_the_cgan_from_its_config(tmp_path: Path) -> None:
    from tsda.commands.fit import run_fit

    data = write_parquet(class_table(40), tmp_path / "flows.parquet")
    run_fit(
        [
            "-c",
            str(REPO / "configs/experiment/fgnet_cgan.yaml"),
            "--data.path",
            str(data),
            "--data.min_packets",
            "3",
            "--data.min_class_size",
            "5",
            "--data.n_packets",
            "12",
            "--model.init_args.n_packets",
            "12",
            "--data.batch_size",
            "32",
            "--model.init_args.width",
            "8",
            "--model.init_args.disc_width",
            "8",
            "--model.init_args.depth",
            "1",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--run_dir",
            str(tmp_path / "run"),
        ]
    )
    assert (tmp_path / "run/checkpoints/last.ckpt").is_file()
    header = (tmp_path / "run/metrics.csv").read_text().splitlines()[0]
    assert "fidelity/size_w1" in header and "train_loss_d" in header
    loaded = load_generative(tmp_path / "run/checkpoints/last.ckpt")
    assert isinstance(loaded, GANModule) and loaded.encoder is not None  # the config's cVAE-GAN
    # the checkpoint carries the noise prior fitted on the training flows (every class seen)
    assert bool((loaded.noise_prior.n > 0).all())


def test_generator_runs_checkpoint_every_epoch_without_validation(tmp_path: Path) -> None:
    """Regression: with validation every 5 epochs, a run stopped after 2 (max_time, kill)
    left no checkpoint; the noise prior must be fitted without validation too."""
    from tsda.commands.fit import run_fit

    data = write_parquet(class_table(40), tmp_path / "flows.parquet")
    run_fit(
        [
            "-c",
            str(REPO / "configs/experiment/fgnet_cgan.yaml"),
            "--data.path",
            str(data),
            "--data.min_packets",
            "3",
            "--data.min_class_size",
            "5",
            "--data.n_packets",
            "12",
            "--model.init_args.n_packets",
            "12",
            "--data.batch_size",
            "32",
            "--model.init_args.width",
            "8",
            "--model.init_args.disc_width",
            "8",
            "--model.init_args.depth",
            "1",
            "--trainer.max_epochs",
            "2",
            "--trainer.check_val_every_n_epoch",
            "5",
            "--trainer.enable_progress_bar",
            "false",
            "--run_dir",
            str(tmp_path / "run"),
        ]
    )
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1
    assert bool((ckpt["state_dict"]["noise_prior.n"] > 0).all())


def test_latent_config_differs_from_plain_only_in_guidance() -> None:
    plain = yaml.safe_load((REPO / "configs/experiment/fgnet_cgan.yaml").read_text())
    latent = yaml.safe_load((REPO / "configs/experiment/fgnet_cgan_latent.yaml").read_text())
    assert plain["data"] == latent["data"]
    a, b = plain["model"]["init_args"], latent["model"]["init_args"]
    assert {k for k in a if a[k] != b[k]} == {"classifier_ckpt", "w_class", "w_latent", "latent_conditioning"}
    assert a["w_class"] == a["w_latent"] == 0 and b["w_class"] > 0 and b["w_latent"] > 0


# -- cVAE-GAN (coverage) -----------------------------------------------------------------
@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> tuple[GANModule, GANModule, Path, dict, object]:
    dm = datamodule()
    torch.manual_seed(0)
    fresh = GANModule(num_classes=dm.num_classes, n_packets=N_PACKETS, w_recon=10.0, **TINY_GAN)
    model, path, fit = fit_gan(tmp_path_factory.mktemp("vae"), dm, epochs=3, w_recon=10.0)
    return model, fresh, path, dict(fit.callback_metrics), dm


def test_reconstruction_terms_train_the_encoder_and_reward_reconstruction(vae: tuple) -> None:
    model, fresh, path, metrics, dm = vae
    assert any(not torch.equal(v, fresh.encoder.state_dict()[k]) for k, v in model.encoder.state_dict().items())
    for key in ("train_recon", "train_kl"):
        assert torch.isfinite(torch.tensor(float(metrics[key])))
    batch = next(iter(dm.train_dataloader()))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        trained = model.reconstruction_losses(batch, None, g())
        untrained = fresh.reconstruction_losses(batch, None, g())
    assert trained["recon"] < untrained["recon"]
    # a plain cGAN has no encoder; the checkpoint of a cVAE-GAN loads and samples valid flows
    assert GANModule(num_classes=2).encoder is None
    loaded = load_generative(path)
    assert loaded.encoder is not None
    out = loaded.sample(torch.tensor([0, 1, 2] * 4), torch.Generator().manual_seed(1))
    assert_valid(out, loaded.codec)


def test_fitted_noise_prior_is_the_posterior_gaussian_of_each_class(vae: tuple) -> None:
    model, _, _, _, dm = vae
    model.fit_noise_prior(dm.train_eval_dataloader())  # the same weights as in the checkpoint
    train = dm.tensors["train"]
    with torch.no_grad():
        mu, logvar = model.encoder(train.x, train.labels)  # (N, Z)
    counts = torch.bincount(train.labels, minlength=dm.num_classes)
    assert torch.equal(model.noise_prior.n, counts)
    for k in range(dm.num_classes):
        zk = mu[train.labels == k].double()
        cov = torch.cov(zk.T, correction=0) + torch.diag(logvar[train.labels == k].exp().double().mean(0))
        cov = cov + 1e-4 * torch.eye(zk.shape[1], dtype=torch.float64)
        chol = model.noise_prior.chol[k].double()
        assert torch.allclose(model.noise_prior.mean[k].double(), zk.mean(0), atol=1e-5)
        assert torch.allclose(chol @ chol.T, cov, atol=1e-4)


def test_sampling_draws_from_the_fitted_prior_unless_told_otherwise(vae: tuple) -> None:
    model, _, path, _, _ = vae
    labels = torch.tensor([0, 1, 2] * 8)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    fitted, again = model.sample(labels, g()), model.sample(labels, g())
    assert torch.equal(fitted.x, again.x)
    assert not torch.equal(fitted.x, model.sample(labels, g(), prior="standard").x)
    assert_valid(fitted, model.codec)
    with pytest.raises(ValueError, match=r"prior must be one of \('fitted', 'standard'\), got 'gaussian'"):
        model.sample(labels, g(), prior="gaussian")
    # a checkpoint from before the fitted prior loads and samples from N(0, I), with a warning
    ckpt = torch.load(path, weights_only=False)
    for name in ("noise_prior.mean", "noise_prior.chol", "noise_prior.n"):
        del ckpt["state_dict"][name]
    torch.save(ckpt, path.with_name("old.ckpt"))
    old = load_generative(path.with_name("old.ckpt"))
    assert int(old.noise_prior.n.sum()) == 0
    with pytest.warns(UserWarning, match=r"no Gaussian for classes \['small_up', 'big_down', 'mixed'\]"):
        from_old = old.sample(labels, g())
    assert torch.equal(from_old.x, old.sample(labels, g(), prior="standard").x)


def test_checkpoints_with_the_old_noise_prior_keys_load_into_the_prior(vae: tuple) -> None:
    """Checkpoints saved when the prior's buffers were the module's own (`noise_mean`,
    `noise_chol`, `noise_prior_n`) load into the submodule `noise_prior`."""
    _model, _, path, _, _ = vae
    ckpt = torch.load(path, weights_only=False)
    for old, new in LEGACY_PRIOR_KEYS.items():
        ckpt["state_dict"][old] = ckpt["state_dict"].pop(new)
    torch.save(ckpt, path.with_name("legacy.ckpt"))
    legacy = load_generative(path.with_name("legacy.ckpt"))
    saved = torch.load(path, weights_only=False)["state_dict"]
    for name, value in legacy.noise_prior.state_dict(prefix="noise_prior.").items():
        assert torch.equal(value, saved[name]), name
    labels = torch.tensor([0, 1, 2] * 4)
    assert torch.equal(
        legacy.sample(labels, torch.Generator().manual_seed(0)).x,
        load_generative(path).sample(labels, torch.Generator().manual_seed(0)).x,
    )


def _batches(labels: list[int], seed: int = 0) -> list[FlowBatch]:
    """Flows of `class_table` with the given labels only (one batch)."""
    batch = FlowCodec(n_packets=N_PACKETS).encode(class_table(10, seed=seed))
    keep = torch.isin(batch.labels, torch.tensor(labels))
    return [FlowBatch(batch.x[keep], batch.lengths[keep], batch.labels[keep])]


def test_noise_prior_warns_about_classes_it_cannot_fit() -> None:
    """No silent N(0, I): a class without training flows is named when the prior is fitted
    and when it is sampled; fitted classes sample without a warning."""
    torch.manual_seed(0)
    model = GANModule(
        num_classes=3, class_names=["small_up", "big_down", "mixed"], n_packets=N_PACKETS, w_recon=1.0, **TINY_GAN
    )
    with pytest.warns(
        UserWarning,
        match=r"noise prior: classes with fewer than 2 training flows: \['mixed'\]; "
        r"they keep N\(0, I\)",
    ):
        model.fit_noise_prior(_batches([0, 1]))
    assert model.noise_prior.fitted.tolist() == [True, True, False]
    with pytest.warns(
        UserWarning,
        match=r"GANModule\.sample: the fitted noise prior has no Gaussian for "
        r"classes \['mixed'\]",
    ):
        model.sample(torch.tensor([0, 2]), torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.sample(torch.tensor([0, 1]), torch.Generator().manual_seed(0))
        model.sample(torch.tensor([2]), torch.Generator().manual_seed(0), prior="standard")


def test_class_regions_warn_about_classes_without_training_flows(guided: tuple[GANModule, Path, Path]) -> None:
    """A class with fewer than 2 training flows gets the latent region of all training
    flows, named in a warning; latent-conditioned sampling of a class never seen warns too."""
    clf_path = guided[2]
    model = GANModule(
        num_classes=3,
        class_names=["small_up", "big_down", "mixed"],
        n_packets=N_PACKETS,
        classifier_ckpt=str(clf_path),
        latent_conditioning=True,
        **TINY_GAN,
    )
    batches = _batches([0, 1])
    with pytest.warns(
        UserWarning,
        match=r"GANModule: classes with fewer than 2 training flows: \['mixed'\]; "
        r"their latent region .* is that of all training flows",
    ):
        model._fit_class_regions(batches)
    with torch.no_grad():
        z = model.guide.encode(batches[0].x)  # (N, D)
    torch.testing.assert_close(model.class_mu[2], z.mean(0), atol=1e-5, rtol=1e-4)
    assert model.class_bank_n.tolist()[2] == 0
    with pytest.warns(UserWarning, match=r"GANModule\.sample: classes never seen in training: \['mixed'\]"):
        model.sample(torch.tensor([0, 2]), torch.Generator().manual_seed(0))
