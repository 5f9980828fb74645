"""Unconditional generators (`conditional: false`) and labelling their samples with a
classifier (`tsda.labelling`, `tsda sample --label_with`): rejection sampling of quotas,
acceptance reports, determinism, labeller checks, latent-guided labelling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from support.tiny import N_PACKETS, datamodule, fit_classifier, fit_gan, trainer

from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.validity import assert_valid
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.sources import read_parquet
from tsda.errors import TsdaError
from tsda.generators.base import load_generative, prepare_augmentation
from tsda.generators.diffusion.module import DiffusionModule
from tsda.generators.gan.module import GANModule
from tsda.labelling import label_samples, load_labeller
from tsda.lit.checkpoint import read_checkpoint

NAMES = ["small_up", "big_down", "mixed"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny classifier, an unconditional cVAE-GAN and two unconditional diffusion models
    (without and with a stored guide), each fitted through the real Trainer."""
    root = tmp_path_factory.mktemp("unconditional")
    dm = datamodule()
    out = {"classifier": fit_classifier(root, dm, epochs=3)}
    out["gan"] = fit_gan(root, dm, epochs=1, conditional=False, w_recon=1.0)[1]
    for name, extra in (("diffusion", {}), ("diffusion_guided", {"classifier_ckpt": str(out["classifier"])})):
        torch.manual_seed(0)
        model = DiffusionModule(
            num_classes=3,
            class_names=NAMES,
            n_packets=N_PACKETS,
            block_out_channels=(8, 16),
            conditional=False,
            ema_decay=0.0,
            **extra,
        )
        fit = trainer(root, 1)
        fit.fit(model, datamodule=dm)
        out[name] = root / f"{name}.ckpt"
        fit.save_checkpoint(out[name])
    return out


def sample(model, labels: list[int], seed: int = 0, **options: object) -> FlowBatch:
    return model.sample(torch.tensor(labels), torch.Generator().manual_seed(seed), **options)


# -- the modules -----------------------------------------------------------------------------
def test_unconditional_checkpoints_record_it(models: dict[str, Path]) -> None:
    for name in ("gan", "diffusion"):
        assert read_checkpoint(models[name])["hyper_parameters"]["conditional"] is False
        model = load_generative(models[name])
        assert model.conditional is False and model.class_names == NAMES
    gan = load_generative(models["gan"])
    assert gan.generator.embed is None and gan.discriminator.embed is None and gan.encoder.embed is None
    assert gan.noise_prior.mean.shape[0] == 1 and bool(gan.noise_prior.fitted.all())  # one prior, fitted
    assert (
        GANModule(num_classes=3).conditional and DiffusionModule(num_classes=3, block_out_channels=(8, 16)).conditional
    )


@pytest.mark.parametrize("name", ["gan", "diffusion"])
def test_unconditional_samples_ignore_the_labels(models: dict[str, Path], name: str) -> None:
    model = load_generative(models[name])
    options = {"steps": 3} if name == "diffusion" else {}
    a, b = sample(model, [0, 0, 0, 0], **options), sample(model, [1, 2, 1, 2], **options)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert_valid(a, model.codec, num_classes=3)


def test_unconditional_diffusion_trains_on_the_null_label() -> None:
    model = DiffusionModule(
        num_classes=3, n_packets=N_PACKETS, block_out_channels=(8, 16), conditional=False, label_dropout=0.0
    )
    seen: list[torch.Tensor] = []
    forward = model.denoiser.forward
    model.denoiser.forward = lambda x, t, labels, latents=None: (seen.append(labels), forward(x, t, labels, latents))[1]
    batch = FlowCodec(n_packets=N_PACKETS).encode(datamodule().split_table("train"))
    model.training_step(batch.index(torch.arange(16)), 0)
    assert len(seen) == 1 and (seen[0] == model.denoiser.null_label).all()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: GANModule(num_classes=3, conditional=False, w_class=1.0), "model.w_class"),
        (lambda: GANModule(num_classes=3, conditional=False, classifier_ckpt="x.ckpt"), "model.classifier_ckpt"),
        (
            lambda: DiffusionModule(num_classes=3, conditional=False, latent_conditioning=True, classifier_ckpt="x"),
            "latent_conditioning",
        ),
    ],
)
def test_unconditional_refuses_what_needs_labels(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_unconditional_diffusion_refuses_cfg_and_guidance_without_a_guide(models: dict[str, Path]) -> None:
    model = load_generative(models["diffusion"])
    with pytest.raises(ValueError, match="cfg_scale"):
        sample(model, [0], steps=2, cfg_scale=2.0)
    with pytest.raises(ValueError, match="guide"):
        sample(model, [0], steps=2, latent_guidance_scale=1.0)


def test_an_outside_guide_steers_an_unconditional_diffusion_model(models: dict[str, Path]) -> None:
    """Latent guidance on an unconditional model: the denoiser gets the null label, the guide
    the requested class, so the class changes the flows only when guided."""
    model = load_generative(models["diffusion"])
    guide = load_labeller(str(models["classifier"]), model).guide
    opts = {"steps": 3, "latent_guidance_scale": 2.0, "guide": guide}
    toward0, toward1 = sample(model, [0, 0, 0], **opts), sample(model, [1, 1, 1], **opts)
    assert not torch.equal(toward0.x, toward1.x)
    assert not torch.equal(toward0.x, sample(model, [0, 0, 0], steps=3).x)
    assert_valid(toward0, model.codec, num_classes=3)
    with pytest.raises(ValueError, match="target_latents"):
        sample(model, [0], **opts, latent_weight=1.0)


def test_generator_augmentation_refuses_an_unconditional_generator(models: dict[str, Path]) -> None:
    aug = GeneratorAugmentation(ckpt=str(models["gan"]), progress=False)
    with pytest.raises(TsdaError, match="unconditional"):
        prepare_augmentation(
            aug,
            device=torch.device("cpu"),
            class_names=NAMES,
            generator=torch.Generator(),
            codec=FlowCodec(n_packets=N_PACKETS),
        )


# -- tsda sample without a labeller ------------------------------------------------------------
def test_sample_refuses_classes_of_an_unconditional_model(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tsda.cli import main

    out = tmp_path / "x.parquet"
    for extra in (
        ["--per_class", "3"],
        ["--n", "3", "--labels", "mixed"],
        ["--n", "3", "--latent_guidance_scale", "1"],
        ["--n", "3", "--min_confidence", "0.5"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(["sample", "--ckpt", str(models["diffusion"]), *extra, "--out", str(out), "--no_progress"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("tsda: error:") and "--label_with" in err, err
    assert not out.exists()
    main(["sample", "--ckpt", str(models["gan"]), "--n", "5", "--out", str(out), "--no_progress"])
    table = read_parquet(out, max_packets=N_PACKETS)
    assert table.class_names == ("unlabelled",) and len(table) == 5


# -- labelling -----------------------------------------------------------------------------------
class FakeSampler:
    """Flows whose class is their first size (k / 10); unconditional: k drawn uniformly,
    conditional: the requested class, except that class 2 comes out as class 0."""

    class_names: ClassVar[list[str]] = ["a", "b", "c"]
    codec = FlowCodec(n_packets=4)
    device = torch.device("cpu")

    def __init__(self, conditional: bool) -> None:
        self.conditional = conditional

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> FlowBatch:
        k = labels.where(labels < 2, 0) if self.conditional else torch.randint(0, 3, labels.shape, generator=generator)
        x = torch.zeros(len(labels), 3, 4)
        x[:, 1] = 1.0
        x[:, 0, 0] = k / 10
        return FlowBatch(x, torch.full((len(labels),), 4), labels)


class FakeLabeller:
    """Reads the class back; class 2 only at confidence 0.5, the others at 0.95."""

    path = "fake.ckpt"

    def label(self, batch: FlowBatch) -> tuple[np.ndarray, np.ndarray]:
        k = (batch.x[:, 0, 0] * 10).round().long().numpy()
        return k, np.where(k == 2, 0.5, 0.95)


def test_rejection_sampling_fills_quotas_and_reports_rates() -> None:
    batch, confidence, report = label_samples(
        FakeSampler(False),
        FakeLabeller(),
        np.array([5, 5, 5]),
        seed=0,
        batch_size=10,
        min_confidence=0.9,
        max_draws=100,
    )
    assert batch.labels.tolist() == [0] * 5 + [1] * 5 and (confidence == 0.95).all()
    assert torch.equal((batch.x[:, 0, 0] * 10).round().long(), batch.labels)  # the labeller's labels
    c = report["classes"]
    assert report["route"] == "rejection" and report["draws"] == 100 and report["unfilled"] == ["c"]
    assert c["c"] == {"quota": 5, "kept": 0, "drawn": 100, "eligible": 0, "acceptance_rate": 0.0}
    assert c["a"]["kept"] == 5 and 0.2 < c["a"]["acceptance_rate"] < 0.5 and c["a"]["drawn"] == 100
    again = label_samples(
        FakeSampler(False),
        FakeLabeller(),
        np.array([5, 5, 5]),
        seed=0,
        batch_size=10,
        min_confidence=0.9,
        max_draws=100,
    )
    assert torch.equal(again[0].x, batch.x) and again[2] == report
    _, _, low = label_samples(
        FakeSampler(False), FakeLabeller(), np.array([5, 5, 5]), batch_size=10, min_confidence=0.5
    )
    assert low["unfilled"] == [] and low["kept"] == 15


def test_targeted_labelling_keeps_what_the_labeller_confirms() -> None:
    _, _, report = label_samples(FakeSampler(True), FakeLabeller(), np.array([3, 0, 2]), batch_size=4, max_draws=40)
    c = report["classes"]
    assert report["route"] == "conditional" and set(c) == {"a", "c"}
    assert c["a"] == {"quota": 3, "kept": 3, "drawn": 3, "eligible": 3, "acceptance_rate": 1.0}
    assert c["c"]["kept"] == 0 and c["c"]["acceptance_rate"] == 0.0 and report["unfilled"] == ["c"]
    with pytest.raises(ValueError, match="min_confidence"):
        label_samples(FakeSampler(True), FakeLabeller(), np.array([1, 1, 1]), min_confidence=1.5)


def _label(models: dict[str, Path], out: Path, gen: str = "gan", *extra: str) -> None:
    from tsda.commands.sample import main

    main(
        [
            "--ckpt",
            str(models[gen]),
            "--label_with",
            str(models["classifier"]),
            "--per_class",
            "3",
            "--max_draws",
            "120",
            "--batch_size",
            "40",
            "--out",
            str(out),
            "--no_progress",
            *extra,
        ]
    )


def test_label_with_writes_confidence_and_is_deterministic(models: dict[str, Path], tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _label(
            models,
            tmp_path / f"{name}.parquet",
            "gan",
            "--seed",
            "2" if name == "c" else "1",
            "--min_confidence",
            "0.4",
        )
    a, b, c = (pq.read_table(tmp_path / f"{n}.parquet") for n in "abc")
    assert a.equals(b) and not a.equals(c)
    assert {"app", "pkts_size", "pkts_dir", "timetofirst", "label_confidence", "generator", "labeller"} <= set(
        a.column_names
    )
    assert min(a.column("label_confidence").to_pylist()) >= 0.4
    report = json.loads((tmp_path / "a.labelling.json").read_text())
    counts = {k: v["kept"] for k, v in report["classes"].items()}
    assert sum(counts.values()) == a.num_rows and all(v <= 3 for v in counts.values())
    assert report["draws"] <= 120 and report["route"] == "rejection"


def test_labellers_with_other_classes_or_codec_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    ckpt = torch.load(models["classifier"], map_location="cpu", weights_only=False)
    other = {**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "class_names": ["x", "y", "z"]}}
    codec = {**ckpt, "datamodule_hyper_parameters": {**ckpt["datamodule_hyper_parameters"], "mtu": 1000.0}}
    for name, payload, needle in (("classes", other, "classes"), ("codec", codec, "encoded")):
        torch.save(payload, tmp_path / f"{name}.ckpt")
        out = tmp_path / f"{name}.parquet"
        with pytest.raises(TsdaError, match=f"--label_with .*{name}.ckpt.*{needle}"):
            _label({**models, "classifier": tmp_path / f"{name}.ckpt"}, out)
        assert not out.exists() and not out.with_suffix(".labelling.json").exists()
    with pytest.raises(TsdaError, match="generator checkpoint"):
        _label({**models, "classifier": models["gan"]}, tmp_path / "g.parquet")
    with pytest.raises(TsdaError, match="--latent_guidance_scale: not an option of GANModule"):
        _label(models, tmp_path / "g.parquet", "gan", "--latent_guidance_scale", "1")
    with pytest.raises(TsdaError, match="no drawn flow reached --min_confidence"):
        _label(models, tmp_path / "g.parquet", "gan", "--min_confidence", "0.99999", "--max_draws", "2")
    assert not (tmp_path / "g.parquet").exists()


@pytest.mark.parametrize(
    "gen, guide, expected",
    [
        ("diffusion", "auto", "labeller"),
        ("diffusion_guided", "auto", "model"),
        ("diffusion_guided", "labeller", "labeller"),
    ],
)
def test_latent_guided_labelling(models: dict[str, Path], tmp_path: Path, gen: str, guide: str, expected: str) -> None:
    """The guided route: each draw is guided toward a class still short (by the stored guide,
    else the labeller) and kept when the labeller agrees; rejection on the same model
    reports the same numbers, so the two compare."""
    out = tmp_path / "guided.parquet"
    _label(models, out, gen, "--steps", "2", "--latent_guidance_scale", "2", "--guide", guide)
    report = json.loads(out.with_suffix(".labelling.json").read_text())
    assert report["route"] == "guided" and report["guide"] == expected
    assert sum(c["drawn"] for c in report["classes"].values()) == report["draws"]
    table = read_parquet(out, max_packets=N_PACKETS)
    assert len(table) == report["kept"]
    _label(models, tmp_path / "plain.parquet", gen, "--steps", "2")
    plain = json.loads((tmp_path / "plain.labelling.json").read_text())
    assert plain["route"] == "rejection" and set(plain["classes"]) == set(report["classes"])


def test_guide_model_needs_a_stored_guide(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TsdaError, match="--guide model"):
        _label(
            models,
            tmp_path / "x.parquet",
            "diffusion",
            "--steps",
            "2",
            "--latent_guidance_scale",
            "1",
            "--guide",
            "model",
        )
    with pytest.raises(TsdaError, match="--guide labeller needs --latent_guidance_scale"):
        _label(models, tmp_path / "x.parquet", "diffusion", "--steps", "2", "--guide", "labeller")
    assert not (tmp_path / "x.parquet").exists()
