"""GPU readiness, checked on a CPU: no host syncs in per-step work, mixed precision, and the
CUDA settings that must precede the first CUDA context.

Per-step work must not read device values back to the host. On CUDA every such read (`.item()`, `bool(t)`, `float(t)`, `.tolist()`, a boolean mask's
data-dependent shape, a blocking copy of host indices) stalls the host until the device
has caught up. A CPU cannot show the stall, but the meta device stands in: its tensors have
shapes and no values, so whatever needs a value raises there. Each hot path runs on meta
here, and its results are checked against what the code computed before.
"""

from __future__ import annotations

import itertools
import os
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from tsda.data.batch import FlowBatch
from tsda.data.datamodule import FlowDataModule, IndexBatchSampler

META = torch.device("meta")


# -- the EMA of the generators' weights ---------------------------------------------------------
def _old_ema(decay: float, ramp: bool, averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    d = min(decay, (1.0 + float(n)) / (10.0 + float(n))) if ramp else decay
    return averaged + (current - averaged) * (1.0 - d)


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3), torch.nn.BatchNorm1d(4), torch.nn.Conv1d(4, 2, 1))


@pytest.mark.parametrize("ramp", [True, False])
def test_ema_update_is_the_averaged_models_without_reading_the_device(ramp: bool) -> None:
    """The EMA update (`tsda.generators.ema`) equals torch's `AveragedModel` with the former
    averaging function to 1e-6 over several steps (weights and buffers, BatchNorm's integer
    count included), keeps its state-dict keys, and runs on the meta device."""
    from tsda.generators.ema import ema_of

    torch.manual_seed(0)
    net = _net()
    old = AveragedModel(net, avg_fn=partial(_old_ema, 0.8, ramp), use_buffers=True).requires_grad_(False)
    new = ema_of(net, 0.8, ramp=ramp)
    assert list(new.state_dict()) == list(old.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(6):
        net(torch.randn(5, 3, 8)).pow(2).mean().backward()  # train mode: BatchNorm statistics move too
        opt.step()
        opt.zero_grad()
        old.update_parameters(net)
        new.update_parameters(net)
    for (name, a), (_, b) in zip(old.state_dict().items(), new.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, msg=name)
    # a checkpoint's state loads, and the update goes on from its count
    loaded = ema_of(net, 0.8, ramp=ramp)
    loaded.load_state_dict(old.state_dict())
    old.update_parameters(net)
    loaded.update_parameters(net)
    for (name, a), (_, b) in zip(old.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, msg=name)
    on_meta = ema_of(_net(), 0.8, ramp=ramp).to(META)  # as the module holding it moves (its count too)
    for _ in range(3):
        on_meta.update_parameters(net.to(META))


# -- the packet transformer's loss ----------------------------------------------------------------
def _flows(n: int = 12, length: int = 8, seed: int = 0) -> FlowBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (n,), generator=g)
    lengths[0] = length  # a full flow: no end-of-flow position
    real = torch.arange(length)[None, :] < lengths[:, None]  # (B, L)
    size = torch.randint(1, 1461, (n, length), generator=g) / 1460.0
    direction = torch.where(torch.rand(n, length, generator=g) < 0.5, 1.0, -1.0)
    iat = torch.rand(n, length, generator=g) * 0.3
    iat[:, 0] = 0.0
    x = torch.stack([size, direction, iat], 1) * real[:, None]  # (B, 3, L)
    return FlowBatch(x, lengths, torch.randint(0, 3, (n,), generator=g))


def _masked_index_losses(module, batch: FlowBatch) -> dict[str, torch.Tensor]:
    """The former loss: the positions picked by boolean masks (data-dependent shapes)."""
    tokens, gaps = module.vocab.tokens(batch, float(module.hparams.mtu))
    h = module.net(*module._inputs(tokens, gaps, batch.x), batch.labels)  # (B, L, D)
    pos = torch.arange(batch.n_packets)[None, :]
    on_packet = pos <= batch.lengths[:, None]
    on_gap = (pos >= 1) & (pos < batch.lengths[:, None])
    packet = F.cross_entropy(module.net.packet_logits(h[on_packet]), tokens[on_packet])
    gap_logits = module.net.gap_logits(h[on_gap], tokens[on_gap])
    gap = F.cross_entropy(gap_logits, gaps[on_gap]) if len(gap_logits) else packet.new_zeros(())
    return {"loss": packet + gap, "loss_packet": packet, "loss_gap": gap}


def test_transformer_loss_is_the_masked_mean_without_reading_the_device() -> None:
    """`TransformerModule.losses` equals the mean over the positions the boolean masks
    picked (to 1e-6, gradients too), also for flows of one packet only (no gap), and runs
    on the meta device (no data-dependent shape)."""
    from tsda.generators.transformer.module import TransformerModule

    torch.manual_seed(0)
    module = TransformerModule(
        num_classes=3, n_packets=8, d_model=16, n_layers=1, n_heads=2, vocab_size=8, size_bins=4, gap_bins=4
    )
    batch = _flows()
    module.fit_vocabulary([batch])
    for b in (batch, batch.index(torch.tensor([1, 2])).replace(lengths=torch.tensor([1, 1]))):
        got, want = module.losses(b), _masked_index_losses(module, b)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-6, msg=k)
        g_got = torch.autograd.grad(got["loss"], module.net.packet_head.weight)[0]
        g_want = torch.autograd.grad(want["loss"], module.net.packet_head.weight)[0]
        torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)
    module.to(META).losses(batch.to(META))


# -- the training batches' indices ----------------------------------------------------------------
def test_training_indices_are_drawn_onto_the_datas_device_unchanged() -> None:
    """The training sampler yields each batch's indices on the data's device (one copy per
    epoch, not a blocking copy per batch), the same indices as drawn on the host, for the
    shuffled and the class-weighted sampler, with DDP shards too."""
    weights = torch.rand(50) + 0.1
    for kwargs in ({}, {"weights": weights}, {"rank": 1, "world_size": 2}):
        host = IndexBatchSampler(50, 8, seed=3, **kwargs)
        placed = IndexBatchSampler(50, 8, seed=3, device=META, **kwargs)
        for _ in range(2):  # two epochs
            want, got = list(host), list(placed)
            assert len(got) == len(want) and all(b.device == META for b in got)
            assert [b.shape for b in got] == [b.shape for b in want]
    # and what the CPU sampler draws is what it always drew: a seeded permutation per epoch
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3 * 1_000_003))
    assert torch.equal(torch.cat(list(IndexBatchSampler(50, 8, seed=3))), order)

    dm = FlowDataModule(synthetic_scale=0.02, batch_size=32)
    dm.place_on(META)
    assert all(idx.device == META for idx in itertools.islice(iter(dm.train_sampler(0)), 3))


# -- joint training's class regions and generated flows ---------------------------------------------
def test_moving_class_regions_update_every_step_on_the_device() -> None:
    """After the first update (a pass over the training split, which warns about sparse
    classes), `MovingClassRegions.update` reads nothing back: it runs on the meta device."""
    from tsda.classifier.nets import build_classifier
    from tsda.generators.regions import MovingClassRegions

    torch.manual_seed(0)
    net = build_classifier("cnn_resblock", 3, width=8)
    regions = MovingClassRegions(3, net.latent_dim, decay=0.5)
    batch = _flows(n=16, length=20)
    regions.update(net, batch, ["a", "b", "c"], lambda: [batch])
    assert regions.filled and float(regions.n.sum()) == 16
    net.to(META)
    regions.to(META)
    for _ in range(2):
        regions.update(net, batch.to(META), ["a", "b", "c"], lambda: pytest.fail("the split is read once"))
    loaded = MovingClassRegions(3, net.latent_dim)
    loaded.load_state_dict(MovingClassRegions(3, net.latent_dim).state_dict())
    assert not loaded.filled  # read from the loaded buffers: not filled yet


def test_joint_training_flows_draw_the_same_noise_without_reading_the_device() -> None:
    """The joint cVAE-GAN's training flows: N(0, I) noise for classes the prior has not
    fitted (all of them before its first fit), the fitted Gaussian for the others, as
    `generate` draws them; the prior's draw for training runs on the meta device."""
    from tsda.joint.gan import JointGAN

    torch.manual_seed(0)
    part = JointGAN(3, 20, ["a", "b", "c"], noise_dim=4, width=8, depth=1, disc_width=8, w_recon=1.0)
    labels = torch.tensor([0, 1, 2, 1])

    def flows(fn, seed: int = 1) -> torch.Tensor:
        return fn(labels, torch.Generator().manual_seed(seed))

    def training(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return part.training_flows(FlowBatch(torch.zeros(len(y), 3, 20), torch.full_like(y, 20), y), g)

    assert torch.equal(flows(training), flows(lambda y, g: part.generate(y, g, prior="standard")))
    part.noise_prior.n[1] = 5  # class 1 fitted: its own Gaussian
    part.noise_prior.mean[1] = 3.0
    with pytest.warns(UserWarning, match="no Gaussian"):
        want = flows(part.generate)  # classes 0 and 2 not fitted: N(0, I), with a warning
    torch.testing.assert_close(flows(training), want)
    prior = part.noise_prior.to(META)
    prior.draw(labels.to(META), torch.zeros(4, 4, device=META), ["a", "b", "c"], warn=False)


# -- the ensemble's validation scores ----------------------------------------------------------------
def test_ensemble_member_scores_read_the_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`member_scores` gives every member torchmetrics' weighted and macro F1 and accuracy
    (classes never true nor predicted left out of the macro mean, as torchmetrics does) and
    its mean loss, reading the device back once for all members (formerly 4 reads each)."""
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_f1_score,
    )

    from tsda.classifier.ensemble import member_scores

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (40,), generator=g)  # class 4 of 5 never true
    pred = torch.randint(0, 4, (3, 40), generator=g)
    pred[0] = labels  # a perfect member
    pred[1, :5] = 4  # predicts the absent class
    loss_sum = torch.rand(3, generator=g) * 40
    want = [
        {
            "loss": float(loss_sum[k]) / 40,
            "weighted_f1": float(multiclass_f1_score(pred[k], labels, 5, average="weighted")),
            "macro_f1": float(multiclass_f1_score(pred[k], labels, 5, average="macro")),
            "accuracy": float(multiclass_accuracy(pred[k], labels, 5, average="micro")),
        }
        for k in range(3)
    ]
    reads = []
    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (reads.append(_n), _o(self, *a, **k))[1]
        )
    got = member_scores(pred, loss_sum, labels, 5)
    monkeypatch.undo()
    assert len(reads) <= 1, reads
    assert got[0]["accuracy"] == 1.0
    for g_row, w_row in zip(got, want):
        assert g_row.keys() == w_row.keys()
        for key in w_row:
            assert g_row[key] == pytest.approx(w_row[key], rel=1e-6, abs=1e-7), key


# -- mixed precision -------------------------------------------------------------------------------
def test_spectral_norm_discriminator_trains_under_bf16_autocast() -> None:
    """The cGAN's discriminator (spectral norm by `torch.nn.utils.parametrizations`, whose
    power iteration broke under autocast before torch 2.4, the floor in pyproject.toml)
    gives scores and gradients under `bf16-mixed`'s autocast."""
    from tsda.generators.gan.nets import FlowDiscriminator

    torch.manual_seed(0)
    disc = FlowDiscriminator(3, 8)
    batch = _flows(n=6, length=12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = disc(batch.x, batch.labels)
    scores.float().mean().backward()
    assert scores.shape == (6,) and torch.isfinite(scores.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters() if p.requires_grad)


# -- the CLI's process start ----------------------------------------------------------------------
def test_cli_sets_the_cublas_workspace_before_any_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tsda` sets `CUBLAS_WORKSPACE_CONFIG` (deterministic cuBLAS) at process start, before a
    command can create a CUDA context (`tsda ensemble` trains groups before its plain
    `tsda fit` runs, whose Trainer set it too late), and keeps a value already set."""
    from tsda.cli import main

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    main(["--help"])
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    main(["--help"])
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


# -- diffusion sampling ----------------------------------------------------------------------------
def test_denoise_copies_nothing_to_the_device_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tsda.generators.diffusion.sampling.denoise` keeps the scheduler's timesteps on the host for its `step`
    and copies the per-step tensors the denoiser and x0 need to the device once: as many
    host-to-device copies for 10 steps as for 3 (the meta device stands in for a GPU)."""
    from tsda.generators.diffusion.module import DEFAULT_SCHEDULER
    from tsda.generators.diffusion.sampling import denoise

    config = {**DEFAULT_SCHEDULER, "prediction_type": "epsilon"}
    copies = []
    original = torch.Tensor.to

    def counting_to(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        out = original(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device.type == "meta":
            copies.append(tuple(self.shape))
        return out

    def run(steps: int, sampler: str) -> int:
        copies.clear()
        labels = torch.zeros(2, dtype=torch.long, device=META)
        with monkeypatch.context() as m:
            m.setattr(torch.Tensor, "to", counting_to)
            denoise(
                lambda x, t, y, z: torch.zeros_like(x),
                config,
                labels,
                torch.Generator().manual_seed(0),
                8,
                null_label=3,
                steps=steps,
                sampler=sampler,
            )
        return len(copies)

    for sampler in ("ddim", "dpmpp"):  # (ddpm's noise comes from the generator's device: the GPU's in use)
        assert run(10, sampler) == run(3, sampler), sampler
