"""The variation contract (`GenerativeModule.vary`, `tsda.generators.variation`): for every family
(diffusion SDEdit with ddim / dpmpp / ddpm, the transformer's continuation and resample,
the cVAE-GAN, the joint module's cVAE-GAN) valid flows of the input's classes, seeded,
the flow itself at strength 0, a fresh sample at 1, nearer the smaller the strength; and
refusals (bad strengths, generators that cannot vary)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
import torch
from support.tiny import N_PACKETS, TINY_GAN, class_table

from tsda.augment.validity import assert_valid
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.errors import TsdaError
from tsda.generators.base import GenerativeModule
from tsda.generators.diffusion.module import DiffusionModule
from tsda.generators.diffusion.sampling import denoise, to_model_space
from tsda.generators.gan.module import GANModule
from tsda.generators.guide import load_guide
from tsda.generators.transformer.module import TransformerModule
from tsda.generators.variation import cvae_vary, keep_unvaried, strengths
from tsda.joint.module import JointModule

NAMES = ["small_up", "big_down", "mixed"]
CODEC = FlowCodec(n_packets=N_PACKETS)
STRENGTHS = [0.0, 0.25, 0.5, 0.75, 1.0]
TINY_JOINT_GEN = {"noise_dim": 8, "width": 8, "depth": 1, "disc_width": 8, "w_recon": 1.0, "ema_decay": 0.9}


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch() -> FlowBatch:
    """18 valid flows, 6 of each of three classes, lengths 6..12."""
    return CODEC.encode(class_table(6, seed=3))


# -- tiny, untrained generators of every family (what `vary` does does not need training) --
def diffusion() -> DiffusionModule:
    torch.manual_seed(0)
    return DiffusionModule(
        num_classes=3, class_names=NAMES, n_packets=N_PACKETS, block_out_channels=(8, 16), ema_decay=0.0
    )


def transformer() -> TransformerModule:
    torch.manual_seed(0)
    model = TransformerModule(
        num_classes=3,
        class_names=NAMES,
        n_packets=N_PACKETS,
        d_model=16,
        n_layers=1,
        n_heads=2,
        vocab_size=32,
        size_bins=8,
        gap_bins=16,
    )
    model.fit_vocabulary([CODEC.encode(class_table(20, seed=5))])
    return model


def cvae_gan(**kwargs: Any) -> GANModule:
    torch.manual_seed(0)
    model = GANModule(num_classes=3, class_names=NAMES, n_packets=N_PACKETS, w_recon=1.0, **{**TINY_GAN, **kwargs})
    model.fit_noise_prior([CODEC.encode(class_table(10, seed=7))])
    return model


def joint(**generator_kwargs: Any) -> JointModule:
    torch.manual_seed(0)
    model = JointModule(
        num_classes=3,
        class_names=NAMES,
        n_packets=N_PACKETS,
        backbone_kwargs={"width": 8},
        latent_points=0,
        generator_kwargs={**TINY_JOINT_GEN, **generator_kwargs},
    )
    model.generator_steps.fill_(1)  # as if trained: no "untrained generator" warning
    model.part.refit([CODEC.encode(class_table(10, seed=7))])
    return model


#: (id, module factory, vary options)
FAMILIES: list[tuple[str, Callable[[], GenerativeModule], dict[str, Any]]] = [
    ("diffusion-ddim", diffusion, {"steps": 8, "sampler": "ddim"}),
    ("diffusion-dpmpp", diffusion, {"steps": 8, "sampler": "dpmpp"}),
    ("transformer-continuation", transformer, {"how": "continuation"}),
    ("transformer-resample", transformer, {"how": "resample"}),
    ("cvae-gan", cvae_gan, {}),
    ("joint", joint, {}),
]
_built: dict[Callable[[], GenerativeModule], GenerativeModule] = {}


@pytest.fixture(params=FAMILIES, ids=[f[0] for f in FAMILIES])
def family(request: pytest.FixtureRequest) -> tuple[GenerativeModule, dict[str, Any]]:
    _, factory, options = request.param
    if factory not in _built:
        _built[factory] = factory()
    return _built[factory], options


def distance(a: FlowBatch, b: FlowBatch) -> float:
    return float((a.x - b.x).abs().mean())


# -- the contract, every family --------------------------------------------------------------
def test_varied_flows_are_valid_seeded_and_of_the_input_classes(family: tuple, batch: FlowBatch) -> None:
    model, options = family
    assert model.can_vary
    model.train()
    rng_state = torch.get_rng_state()
    out = model.vary(batch, 0.5, g(0), **options)
    assert_valid(out, CODEC, like=batch, num_classes=3)  # labels carried, same shape and device
    assert model.training and all(m.training for m in model.modules() if type(m).__name__ != "FrozenGuide")
    assert torch.equal(torch.get_rng_state(), rng_state)  # no global RNG
    again = model.vary(batch, 0.5, g(0), **options)
    assert torch.equal(out.x, again.x) and torch.equal(out.lengths, again.lengths)
    assert not torch.equal(out.x, model.vary(batch, 0.5, g(1), **options).x)


def test_strength_zero_is_the_flow_itself(family: tuple, batch: FlowBatch) -> None:
    model, options = family
    out = model.vary(batch, 0.0, g(0), **options)
    assert torch.equal(out.x, batch.x) and torch.equal(out.lengths, batch.lengths)
    assert torch.equal(out.labels, batch.labels)


def test_per_flow_strengths_keep_the_rows_of_strength_zero(family: tuple, batch: FlowBatch) -> None:
    model, options = family
    s = torch.tensor([0.0, 1.0, 0.5]).repeat(len(batch) // 3)  # (B,)
    out = model.vary(batch, s, g(0), **options)
    assert_valid(out, CODEC, like=batch)
    zero = s == 0
    assert torch.equal(out.x[zero], batch.x[zero]) and torch.equal(out.lengths[zero], batch.lengths[zero])
    assert not torch.equal(out.x[~zero], batch.x[~zero])


def test_the_nearer_the_smaller_the_strength(family: tuple, batch: FlowBatch) -> None:
    """Mean |x - input| over the batch and three seeds rises strictly with the strength (a
    `vary` that ignored the strength would give equal distances above 0)."""
    model, options = family
    d = [sum(distance(model.vary(batch, s, g(seed), **options), batch) for seed in range(3)) / 3 for s in STRENGTHS]
    assert d[0] == 0.0
    assert all(a < b for a, b in pairwise(d)), d


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), torch.tensor([0.5, 0.5])])
def test_strengths_outside_the_unit_interval_raise(family: tuple, batch: FlowBatch, strength: Any) -> None:
    model, options = family
    with pytest.raises(ValueError, match="strength"):
        model.vary(batch, strength, g(0), **options)


def test_unknown_options_raise(family: tuple, batch: FlowBatch) -> None:
    model, options = family
    with pytest.raises(TypeError):
        model.vary(batch, 0.5, g(0), **options, no_such_option=1)


# -- strength 1: a fresh sample, what `sample` draws -----------------------------------------
@pytest.mark.parametrize("sampler", ["ddim", "dpmpp", "ddpm"])
def test_diffusion_strength_one_is_the_sample_of_the_labels(batch: FlowBatch, sampler: str) -> None:
    model = _built.setdefault(diffusion, diffusion())
    out = model.vary(batch, 1.0, g(4), steps=6, sampler=sampler)
    assert torch.equal(out.x, model.sample(batch.labels, g(4), steps=6, sampler=sampler).x)
    assert_valid(model.vary(batch, torch.linspace(0, 1, len(batch)), g(0), steps=6, sampler=sampler), CODEC, like=batch)


def test_transformer_continuation_at_one_and_gan_at_one_are_samples(batch: FlowBatch) -> None:
    model = _built.setdefault(transformer, transformer())
    assert torch.equal(model.vary(batch, 1.0, g(2)).x, model.sample(batch.labels, g(2)).x)
    gan = _built.setdefault(cvae_gan, cvae_gan())
    assert torch.equal(gan.vary(batch, 1.0, g(2)).x, gan.sample(batch.labels, g(2)).x)
    jm = _built.setdefault(joint, joint())
    assert torch.equal(jm.vary(batch, 1.0, g(2), prior="standard").x, jm.sample(batch.labels, g(2), prior="standard").x)


# -- family specifics ------------------------------------------------------------------------
def test_sdedit_below_one_step_returns_the_flow_through_the_codec(batch: FlowBatch) -> None:
    model = _built.setdefault(diffusion, diffusion())
    out = model.vary(batch, 0.1, g(0), steps=8)  # floor(8 * 0.1) = 0 steps run
    assert torch.equal(out.lengths, batch.lengths) and torch.allclose(out.x, batch.x, atol=1e-6)


def test_denoise_starts_part_way_only_from_given_flows(batch: FlowBatch) -> None:
    model = _built.setdefault(diffusion, diffusion())
    x0 = to_model_space(batch.x)
    args = (model.denoiser, model.scheduler_config, batch.labels, g(0), N_PACKETS, model.denoiser.null_label)
    assert torch.equal(denoise(*args, steps=4, init=x0, start_index=4), x0)
    with pytest.raises(ValueError, match="start_index"):
        denoise(*args, steps=4, start_index=2)
    with pytest.raises(ValueError, match="start_index"):
        denoise(*args, steps=4, init=x0, start_index=5)


def test_continuation_keeps_the_prefix_exactly(batch: FlowBatch) -> None:
    model = _built.setdefault(transformer, transformer())
    out = model.vary(batch, 0.5, g(0), how="continuation")
    kept = torch.round(0.5 * batch.lengths).long()
    for i, k in enumerate(kept.tolist()):
        assert torch.equal(out.x[i, :, :k], batch.x[i, :, :k])
    # resample at a small strength keeps most positions, at 1 keeps none in expectation
    low = model.vary(batch, 0.1, g(0), how="resample")
    assert (low.x == batch.x).all(1).float().mean() > 0.7
    with pytest.raises(ValueError, match="how"):
        model.vary(batch, 0.5, g(0), how="sideways")


def test_cvae_variation_fades_the_reconstruction_residual() -> None:
    x = torch.rand(4, 3, 5)
    enc = lambda flows: flows.mean((1, 2))[:, None].expand(4, 2)  # noqa: E731
    gen = lambda z: z.sum(1)[:, None, None].expand(4, 3, 5) * 0.1  # noqa: E731
    prior = torch.randn(4, 2)
    s = torch.tensor([0.0, 0.3, 0.7, 1.0])
    out = cvae_vary(gen, enc, x, s, prior)
    assert torch.allclose(out[0], x[0], atol=1e-6) and torch.allclose(out[3], gen(prior)[3])
    mid = gen(enc(x) + s[:, None] * (prior - enc(x))) + (1 - s)[:, None, None] * (x - gen(enc(x)))
    assert torch.allclose(out, mid)


def test_latent_conditioned_gan_is_conditioned_on_each_flow_own_latent(batch: FlowBatch) -> None:
    guide = load_guide(
        3, hparams={"num_classes": 3, "class_names": NAMES, "backbone_kwargs": {"width": 8}, "latent_points": 0}
    )
    model = cvae_gan(latent_conditioning=True, latent_dim=guide.latent_dim)
    object.__setattr__(model, "_guide", guide)
    s = torch.full((len(batch),), 0.5)
    out = model.vary(batch, s, g(0))
    net, y, latent = model.generator_ema.module.eval(), batch.labels, guide.encode(batch.x)
    expected = cvae_vary(
        lambda z: net(z, y, latent), lambda f: model.encoder(f, y)[0], batch.x, s, model._prior_noise(y, g(0), "fitted")
    )
    assert torch.equal(out.x, CODEC.snap(expected).x)
    object.__setattr__(model, "_guide", None)  # a checkpoint sampling without its guide: class latents
    assert_valid(model.vary(batch, 0.5, g(0)), CODEC, like=batch)


def test_unconditional_generators_vary_too(batch: FlowBatch) -> None:
    """A generator trained without labels varies flows as well (near a flow, its class is
    likely kept; the labels are carried, as `sample` carries its requests)."""
    for model in (cvae_gan(conditional=False), transformer_unconditional()):
        out = model.vary(batch, torch.tensor([0.0, 0.5, 1.0]).repeat(len(batch) // 3), g(0))
        assert_valid(out, CODEC, like=batch)
        assert torch.equal(out.x[0::3], batch.x[0::3])


def transformer_unconditional() -> TransformerModule:
    torch.manual_seed(0)
    model = TransformerModule(
        num_classes=3,
        n_packets=N_PACKETS,
        d_model=16,
        n_layers=1,
        n_heads=2,
        vocab_size=8,
        size_bins=4,
        gap_bins=8,
        conditional=False,
    )
    model.fit_vocabulary([CODEC.encode(class_table(10, seed=5))])
    return model


# -- refusals ----------------------------------------------------------------------------------
class _NoVariation(GenerativeModule):
    def sample(self, labels: torch.Tensor, generator: torch.Generator, **options: Any) -> FlowBatch:
        raise NotImplementedError


def test_generators_that_cannot_vary_say_so(batch: FlowBatch) -> None:
    plain = GANModule(num_classes=3, n_packets=N_PACKETS, **TINY_GAN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain_joint = joint(w_recon=0.0)
    for model, match in (
        (plain, "GANModule cannot vary flows: it needs an encoder"),
        (plain_joint, "JointModule cannot vary flows: its cgan generator needs an encoder"),
        (_NoVariation(), "_NoVariation cannot vary flows"),
    ):
        assert not model.can_vary
        with pytest.raises(TsdaError, match=match):
            model.vary(batch, 0.5, g(0))


def test_the_shared_helpers(batch: FlowBatch) -> None:
    assert torch.equal(strengths(0.25, 3, "cpu"), torch.full((3,), 0.25))
    assert strengths(torch.tensor([0, 1, 0.5], dtype=torch.float64), 3, "cpu").dtype == torch.float32
    with pytest.raises(ValueError, match=r"strength must be a number or a \(3,\) tensor"):
        strengths(torch.zeros(3, 1), 3, "cpu")
    other = CODEC.encode(class_table(6, seed=9))
    kept = keep_unvaried(other, batch, torch.tensor([0.0, 0.5]).repeat(len(batch) // 2))
    assert torch.equal(kept.x[0::2], batch.x[0::2]) and torch.equal(kept.x[1::2], other.x[1::2])
    assert torch.equal(kept.lengths[0::2], batch.lengths[0::2]) and torch.equal(kept.labels, batch.labels)
