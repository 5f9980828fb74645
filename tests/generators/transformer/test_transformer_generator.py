"""Autoregressive packet transformer (`tsda.generators.transformer.module`): the causal net, the fitted
packet vocabulary, a real-Trainer fit, valid and seeded sampling, checkpoints, `tsda sample`,
the generator augmentation, unconditional mode and the shipped config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from support.tiny import N_PACKETS, class_table, datamodule, trainer

from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.validity import assert_valid
from tsda.data.batch import DIRECTION, SIZE, FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.sources import read_parquet, write_parquet
from tsda.errors import TsdaError
from tsda.generators.base import GenerativeModule, load_generative, prepare_augmentation
from tsda.generators.transformer.module import TransformerModule
from tsda.generators.transformer.nets import PacketTransformer
from tsda.generators.transformer.tokens import EOS, PacketVocabulary
from tsda.lit.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[3]
NAMES = ["small_up", "big_down", "mixed"]
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "vocab_size": 32, "size_bins": 8, "gap_bins": 16, "lr": 1e-2}


def tiny(**kwargs: object) -> TransformerModule:
    torch.manual_seed(0)
    return TransformerModule(num_classes=3, class_names=NAMES, n_packets=N_PACKETS, **{**TINY, **kwargs})


def fit(root: Path, epochs: int, **kwargs: object) -> tuple[TransformerModule, Path]:
    model = tiny(**kwargs)
    run = trainer(root, epochs)
    run.fit(model, datamodule=datamodule())
    path = root / "transformer.ckpt"
    run.save_checkpoint(path)
    return model, path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[TransformerModule, Path]:
    """A tiny conditional transformer fitted for 15 epochs (~90 steps) on three classes."""
    return fit(tmp_path_factory.mktemp("transformer"), 15)


def sample(model: TransformerModule, labels: list[int], seed: int = 0, **options: object) -> FlowBatch:
    return model.sample(torch.tensor(labels), torch.Generator().manual_seed(seed), **options)


def train_batch() -> FlowBatch:
    return FlowCodec(n_packets=N_PACKETS).encode(class_table(20, seed=5))


# -- the net ---------------------------------------------------------------------------------
def test_the_net_is_causal_and_keeps_shapes() -> None:
    torch.manual_seed(0)
    net = PacketTransformer(3, n_tokens=10, n_gap_bins=5, n_packets=6, d_model=16, n_layers=2, n_heads=2).eval()
    tokens, gaps = torch.randint(0, 11, (4, 6)), torch.randint(0, 6, (4, 6))
    feats, labels = torch.rand(4, 6, 3), torch.tensor([0, 1, 2, 0])
    h = net(tokens, gaps, feats, labels)
    assert h.shape == (4, 6, 16) and net.packet_logits(h).shape == (4, 6, 10)
    assert net.gap_logits(h, tokens.clamp_max(9)).shape == (4, 6, 5)
    changed = tokens.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 10
    h2 = net(changed, gaps, feats, labels)
    assert torch.allclose(h[:, :4], h2[:, :4], atol=1e-6) and not torch.allclose(h[:, 4:], h2[:, 4:])
    assert not torch.allclose(net(tokens, gaps, feats, torch.tensor([1, 2, 0, 1])), h)  # the class matters
    with pytest.raises(ValueError, match="multiple"):
        PacketTransformer(3, 10, 5, 6, d_model=15, n_heads=2)


def test_cached_steps_compute_what_the_full_pass_does() -> None:
    torch.manual_seed(0)
    net = PacketTransformer(3, n_tokens=10, n_gap_bins=5, n_packets=6, d_model=16, n_layers=2, n_heads=2).eval()
    tokens, gaps = torch.randint(0, 11, (4, 6)), torch.randint(0, 6, (4, 6))
    feats, labels = torch.rand(4, 6, 3), torch.tensor([0, 1, 2, 0])
    full = net(tokens, gaps, feats, labels)  # (B, L, D)
    cache, steps = None, []
    for i in range(6):
        h, cache = net.step(tokens[:, i], gaps[:, i], feats[:, i], labels, cache)
        steps.append(h)
    assert len(cache) == 2 and cache[0][0].shape == (4, 2, 6, 8)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="at most"):
        net.step(tokens[:, 0], gaps[:, 0], feats[:, 0], labels, cache)


# -- the vocabulary --------------------------------------------------------------------------
def vocab_batch() -> FlowBatch:
    """40 flows of 6 packets: 517 bytes upstream and 1448 downstream are frequent (exact
    values), every other size appears once; flows 0..9 have 3 packets."""
    rng = np.random.default_rng(0)
    n, p = 40, 6
    sizes = rng.integers(100, 1400, (n, p)).astype(float)
    directions = rng.integers(0, 2, (n, p)).astype(np.int8)
    sizes[:, 0], directions[:, 0] = 517, 0
    sizes[:, 1], directions[:, 1] = 1448, 1
    lengths = np.where(np.arange(n) < 10, 3, p)
    real = np.arange(p)[None, :] < lengths[:, None]
    times = np.cumsum(rng.uniform(0, 0.1, (n, p)), 1) * real
    times -= times[:, :1]
    x, lengths = FlowCodec(n_packets=p).encode_arrays(sizes * real, directions * real, times * real, lengths)
    return FlowBatch(x, lengths, torch.zeros(n, dtype=torch.long))


def test_vocabulary_holds_the_most_frequent_exact_values() -> None:
    batch = vocab_batch()
    vocab = PacketVocabulary(vocab_size=2, size_bins=8, gap_bins=4)
    vocab.fit([batch], mtu=1460.0)
    assert sorted(zip(vocab.exact_bytes.tolist(), vocab.exact_dir.tolist())) == [(517, 1.0), (1448, -1.0)]
    tokens, gaps = vocab.tokens(batch, 1460.0)
    assert (tokens[:, 0] == 1 + vocab.exact_bytes.tolist().index(517)).all()
    assert (tokens[:10, 3:] == EOS).all() and (tokens[10:] != EOS).all()  # EOS from the length on
    assert (tokens[:, 2:][batch.mask()[:, 2:]] > 2).all()  # the rest: bin tokens
    assert (gaps[:, 0] == 4).all() and (gaps[:, 1:] < 4).all()
    assert vocab.token_count[EOS] == 10 and vocab.token_count.sum() == batch.lengths.sum() + 10
    assert vocab.gap_count.sum() == (batch.lengths - 1).sum()
    # every byte value belongs to exactly one token, and drawing a token back gives a byte of it
    size, _d = vocab.packet_fields(batch, 1460.0)
    real = batch.mask()
    drawn, direction = vocab.draw_packets(tokens[real], torch.Generator().manual_seed(0))
    back = vocab.byte_token[(direction < 0).long(), drawn.long()]
    assert torch.equal(back, tokens[real])
    exact = tokens[real] <= 2
    assert torch.equal(drawn[exact].long(), size[real][exact])  # exact tokens come back exactly
    assert (vocab.residual[(direction < 0).long(), drawn.long()][~exact] > 0).all()  # bins: seen sizes only


def test_gap_draws_stay_inside_their_bins() -> None:
    vocab = PacketVocabulary(vocab_size=2, size_bins=8, gap_bins=4)
    vocab.fit([vocab_batch()], mtu=1460.0)
    bins = torch.arange(4).repeat(50)
    iat = vocab.draw_gaps(bins, torch.Generator().manual_seed(0))
    assert ((iat >= vocab.gap_edges[bins]) & (iat <= vocab.gap_edges[bins + 1])).all()
    inside = iat < vocab.gap_edges[bins + 1]  # (a draw can land on the upper edge)
    assert inside.float().mean() > 0.9 and torch.equal(vocab.gap_bin(iat)[inside], bins[inside])


def test_bad_vocabulary_parameters_raise() -> None:
    with pytest.raises(ValueError):
        PacketVocabulary(vocab_size=-1)
    with pytest.raises(ValueError, match="exceeds"):
        PacketVocabulary(size_bins=2000, max_bytes=1460)


# -- fitting ---------------------------------------------------------------------------------
def test_fit_fits_the_vocabulary_and_lowers_the_loss(fitted: tuple[TransformerModule, Path]) -> None:
    model, _ = fitted
    assert model.vocab.fitted and int((model.vocab.exact_bytes >= 0).sum()) == 32
    fresh = tiny()
    fresh.vocab.load_state_dict(model.vocab.state_dict())
    batch = train_batch()
    with torch.no_grad():
        trained, untrained = model.losses(batch), fresh.losses(batch)
    assert trained["loss"] < untrained["loss"] - 1.0
    assert torch.allclose(trained["loss"], trained["loss_packet"] + trained["loss_gap"])


def test_fit_logs_the_losses_per_epoch(tmp_path: Path) -> None:
    model = tiny()
    run = trainer(tmp_path, 1)
    run.fit(model, datamodule=datamodule())
    assert {"train_loss", "train_loss_packet", "train_loss_gap", "val_loss"} <= set(run.callback_metrics)


def test_a_fitted_vocabulary_is_kept_when_training_goes_on(
    fitted: tuple[TransformerModule, Path], tmp_path: Path
) -> None:
    model = load_generative(fitted[1])
    before = {k: v.clone() for k, v in model.vocab.state_dict().items()}
    other = type(datamodule())
    dm = other.from_tables(
        *[class_table(n, 40 + i) for i, n in enumerate((30, 10, 10))],
        n_packets=N_PACKETS,
        batch_size=32,
        eval_batch_size=64,
    )
    trainer(tmp_path, 1).fit(model.train(), datamodule=dm)
    assert all(torch.equal(before[k], v) for k, v in model.vocab.state_dict().items())


# -- sampling --------------------------------------------------------------------------------
def test_samples_are_valid_of_the_asked_classes_and_learnt(fitted: tuple[TransformerModule, Path]) -> None:
    model, _ = fitted
    labels = [0] * 40 + [1] * 40 + [2] * 40
    out = sample(model, labels)
    assert_valid(out, model.codec, num_classes=3)
    assert out.labels.tolist() == labels and out.x.shape == (120, 3, N_PACKETS)
    real = out.mask()
    up = out.x[:40, DIRECTION][real[:40]]
    down = out.x[40:80, DIRECTION][real[40:80]]
    assert (up > 0).float().mean() > 0.8 and (down < 0).float().mean() > 0.8  # class_table's directions
    assert out.x[:40, SIZE][real[:40]].mean() * 1460 < 400 < out.x[40:80, SIZE][real[40:80]].mean() * 1460
    assert 1 < out.lengths.float().mean() and (out.lengths < N_PACKETS).any()  # lengths are modelled


@pytest.mark.parametrize("temperature", [1.0, 5.0])
def test_sampled_sizes_are_vocabulary_values_or_seen_bin_sizes(
    fitted: tuple[TransformerModule, Path], temperature: float
) -> None:
    """Even at a high temperature no token unseen in training is drawn (nor EOS first)."""
    model, _ = fitted
    out = sample(model, [0, 1, 2] * 30, seed=3, temperature=temperature)
    table = model.codec.decode(out, tuple(NAMES))
    real = np.arange(N_PACKETS)[None, :] < table.lengths[:, None]
    sizes, dirs = table.sizes[real].astype(int), table.directions[real].astype(int)
    vocab = model.vocab
    exact = set(zip(vocab.exact_bytes.tolist(), (vocab.exact_dir < 0).long().tolist()))
    in_vocab = np.array([(s, d) in exact for s, d in zip(sizes, dirs)])
    seen_residual = vocab.residual[torch.as_tensor(dirs), torch.as_tensor(sizes)].numpy() > 0
    assert in_vocab.any() and (~in_vocab).any()
    assert (in_vocab | seen_residual).all() and not (in_vocab & seen_residual).any()


def test_sampling_is_deterministic_from_the_seed(fitted: tuple[TransformerModule, Path]) -> None:
    model, _ = fitted
    labels = [0, 1, 2] * 8
    a, b, c = sample(model, labels, 7), sample(model, labels, 7), sample(model, labels, 8)
    assert torch.equal(a.x, b.x) and torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.x, c.x)


def test_sampling_options(fitted: tuple[TransformerModule, Path]) -> None:
    model, _ = fitted
    labels = [2] * 16
    greedy = [sample(model, labels, seed, top_k=1) for seed in (0, 1)]
    for out in greedy:
        assert_valid(out, model.codec)

    def first_tokens(out: FlowBatch) -> set[int]:  # the first packet follows nothing random
        return set(model.vocab.tokens(out, model.hparams.mtu)[0][:, 0].tolist())

    assert len(first_tokens(greedy[0])) == 1 and first_tokens(greedy[0]) == first_tokens(greedy[1])
    assert len(first_tokens(sample(model, labels * 4, 0))) > 1
    assert_valid(sample(model, labels, 0, temperature=0.5), model.codec)
    for bad in ({"temperature": 0.0}, {"top_k": 0}):
        with pytest.raises(ValueError):
            sample(model, labels, **bad)
    with pytest.raises(TypeError):
        sample(model, labels, steps=10)
    with pytest.raises(ValueError, match="not fitted"):
        sample(tiny(), labels)


# -- checkpoints and the tools that take any generator ---------------------------------------
def test_checkpoint_round_trip_samples_the_same_flows(fitted: tuple[TransformerModule, Path]) -> None:
    model, path = fitted
    ckpt = read_checkpoint(path)
    assert ckpt[GenerativeModule.CLASS_PATH_KEY] == "tsda.generators.transformer.module.TransformerModule"
    assert "vocab.exact_bytes" in ckpt["state_dict"]
    loaded = load_generative(path)
    assert isinstance(loaded, TransformerModule) and not loaded.training
    assert loaded.class_names == NAMES and loaded.codec == model.codec and loaded.conditional
    assert torch.equal(sample(loaded, [0, 1, 2], 4).x, sample(model, [0, 1, 2], 4).x)


def test_tsda_sample_writes_its_flows(fitted: tuple[TransformerModule, Path], tmp_path: Path) -> None:
    from tsda.commands.sample import main

    path = fitted[1]
    out = tmp_path / "syn.parquet"
    main(
        [
            "--ckpt",
            str(path),
            "--per_class",
            "5",
            "--seed",
            "1",
            "--out",
            str(out),
            "--batch_size",
            "4",
            "--option",
            "temperature=0.9",
            "--no_progress",
        ]
    )
    table = read_parquet(out, max_packets=N_PACKETS)
    assert len(table) == 15 and table.class_counts().tolist() == [5, 5, 5]
    assert set(pq.read_table(out, columns=["generator"]).column("generator").to_pylist()) == {
        f"TransformerModule:{path}"
    }
    with pytest.raises(TsdaError, match="--steps: not an option of TransformerModule"):
        main(["--ckpt", str(path), "--n", "3", "--steps", "5", "--out", str(tmp_path / "x.parquet"), "--no_progress"])
    assert not (tmp_path / "x.parquet").exists()


def test_the_generator_augmentation_takes_it(fitted: tuple[TransformerModule, Path]) -> None:
    model, path = fitted
    aug = GeneratorAugmentation(str(path), pool_per_class=4, progress=False)
    prepare_augmentation(
        aug, device=torch.device("cpu"), class_names=NAMES, generator=torch.Generator(), codec=model.codec
    )
    batch = train_batch()
    out = aug(batch, torch.Generator().manual_seed(0))
    assert_valid(out, like=batch)


def test_unconditional_mode_ignores_the_labels(tmp_path: Path) -> None:
    _model, path = fit(tmp_path, 1, conditional=False)
    loaded = load_generative(path)
    assert loaded.conditional is False and loaded.net.class_emb is None
    assert read_checkpoint(path)["hyper_parameters"]["conditional"] is False
    a, b = sample(loaded, [0] * 12, seed=2), sample(loaded, [2] * 12, seed=2)
    assert torch.equal(a.x, b.x) and b.labels.tolist() == [2] * 12
    assert_valid(a, loaded.codec)


def test_conditional_samples_depend_on_the_labels(fitted: tuple[TransformerModule, Path]) -> None:
    model, _ = fitted
    assert not torch.equal(sample(model, [0] * 12, seed=2).x, sample(model, [2] * 12, seed=2).x)


def test_tsda_fit_trains_it_from_its_config(tmp_path: Path) -> None:
    from tsda.commands.fit import run_fit

    data = write_parquet(class_table(30), tmp_path / "flows.parquet")
    run_fit(
        [
            "-c",
            str(REPO / "configs/experiment/fgnet_transformer.yaml"),
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
            "--model.init_args.d_model",
            "16",
            "--model.init_args.n_layers",
            "1",
            "--model.init_args.vocab_size",
            "16",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--latent_plot",
            "false",
            "--run_dir",
            str(tmp_path / "run"),
        ]
    )
    header = (tmp_path / "run/metrics.csv").read_text().splitlines()[0]
    assert "train_loss_packet" in header and "val_loss_gap" in header
    # no monitor (the held-out NLL picks too early a checkpoint): last.ckpt is the one sampled
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["best_checkpoint"].endswith("last.ckpt") and not (tmp_path / "run/checkpoints/best.ckpt").exists()
    loaded = load_generative(tmp_path / "run/checkpoints/last.ckpt")
    assert isinstance(loaded, TransformerModule) and loaded.vocab.fitted
    assert_valid(sample(loaded, [0, 1, 2]), loaded.codec)
