"""The hand-crafted augmentations: validity (property tests), seeds, what each may alter,
their rules, combinators from YAML, batch policies, enlargement and the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.augment import K, flows, gen, make_batch

from tsda.augment.base import Augmentation, Compose, OneOf, RandomApply
from tsda.augment.catalog import AUGMENTATIONS, HANDCRAFTED, POLICIES, build_augmentation, class_path
from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.ops import partners, sample_beta
from tsda.augment.validity import assert_valid, check_valid
from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.table import FlowTable

ROOT = Path(__file__).resolve().parents[2]
MIXING = {"cutmix", "mixup"}
RANDOM_FREE = {"flip"}  # deterministic by its rule


def build(name: str, **kwargs) -> Augmentation:
    if name in MIXING and not kwargs.get("same_class", True):
        kwargs.setdefault("num_classes", K)
    return HANDCRAFTED[name](**kwargs)


def _sorted_pair(lo: float, hi: float) -> st.SearchStrategy:
    return st.tuples(st.floats(lo, hi), st.floats(lo, hi)).map(sorted)


PARAMS: dict[str, st.SearchStrategy] = {
    "gaussian_noise": st.fixed_dictionaries({"sigma": st.floats(0, 1)}),
    "spike_noise": st.fixed_dictionaries({"max_spikes": st.integers(1, 30), "sigma": st.floats(0, 1)}),
    "gaussian_wrapup": st.fixed_dictionaries({"amplitude": st.floats(0, 0.99), "width": st.floats(0.1, 30)}),
    "sine_wrapup": st.tuples(st.floats(0, 0.99), _sorted_pair(0, 5)).map(
        lambda t: {"amplitude": t[0], "min_cycles": t[1][0], "max_cycles": t[1][1]}
    ),
    "constant_wrapup": _sorted_pair(0, 4).map(lambda t: {"low": t[0], "high": t[1]}),
    "bernoulli_mask": st.fixed_dictionaries({"p": st.floats(0, 1)}),
    "window_mask": st.fixed_dictionaries({"window": st.integers(1, 30)}),
    "interpolation": st.just({}),
    "flip": st.just({}),
    "packet_loss": st.fixed_dictionaries({"dt": st.floats(1e-4, 20)}),
    "translation": st.fixed_dictionaries({"max_shift": st.integers(1, 30)}),
    "wrap": st.fixed_dictionaries({"p": st.floats(0, 1)}),
    "permutation": st.fixed_dictionaries({"n_segments": st.integers(2, 30)}),
    "cutmix": st.fixed_dictionaries({"max_fraction": st.floats(0.01, 1), "same_class": st.booleans()}),
    "change_rtt": _sorted_pair(0, 100).map(lambda t: {"low": t[0], "high": t[1]}),
    "time_shift": st.fixed_dictionaries({"max_shift": st.floats(1e-3, 3600)}),
    "tcbench_packet_loss": st.fixed_dictionaries({"half_window": st.floats(1e-4, 3600)}),
    "mixup": st.fixed_dictionaries({"alpha": st.floats(0.05, 5), "same_class": st.booleans()}),
}


def test_catalog_is_complete() -> None:
    assert set(PARAMS) == set(HANDCRAFTED)
    assert len(HANDCRAFTED) == 18
    for name, cls in HANDCRAFTED.items():
        assert cls.family in ("amplitude", "mask", "order", "time", "mixing")
        assert set(cls.alters) == {"size", "direction", "iat"}
        assert (ROOT / "configs/augment" / f"{name}.yaml").is_file()
    # the full catalog adds the policies (tests/augment/test_policy.py) and the trained generator,
    # whose config names a checkpoint to set
    assert AUGMENTATIONS == {**HANDCRAFTED, **POLICIES, "generator": GeneratorAugmentation}
    assert GeneratorAugmentation.family == "generator"
    generator_yaml = build_augmentation(ROOT / "configs/augment/generator.yaml")
    assert type(generator_yaml) is GeneratorAugmentation
    with pytest.raises(ValueError, match="needs a checkpoint"):
        build_augmentation("generator")


# -- validity over random batches, lengths and parameters ---------------------------------


@pytest.mark.parametrize("name", list(HANDCRAFTED))
@settings(max_examples=25, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1), b=st.integers(1, 12), length=st.integers(1, 24))
def test_every_output_is_valid(name: str, data: st.DataObject, seed: int, b: int, length: int) -> None:
    kwargs = data.draw(PARAMS[name])
    aug = build(name, **kwargs)
    batch = make_batch(seed, b, length)
    before = batch.x.clone()
    out = aug(batch, gen(seed))
    mixing_classes = name in MIXING and not kwargs.get("same_class", True)
    assert_valid(out, FlowCodec(n_packets=length), like=batch, keep_labels=not mixing_classes, num_classes=K)
    assert torch.equal(batch.x, before), "the input batch was modified in place"
    assert (out.soft_labels is not None) == mixing_classes
    if mixing_classes:
        assert out.soft_labels.shape == (b, K)


def test_check_valid_finds_each_problem() -> None:
    x = torch.zeros(8, 3, 10)
    x[:, SIZE, :9], x[:, DIRECTION, :9], x[:, IAT, 1:9] = 0.5, -1.0, 0.1
    valid = FlowBatch(x, torch.full((8,), 9), torch.zeros(8, dtype=torch.long))
    assert check_valid(valid) == []
    broken = {
        "size outside": (SIZE, 3, 1.5),
        "direction not": (DIRECTION, 3, 0.0),
        "first packet's iat": (IAT, 0, 0.1),
        "padding": (SIZE, 9, 0.5),
        "negative iat": (IAT, 2, -0.1),
    }
    for what, (channel, position, value) in broken.items():
        bad = x.clone()
        bad[0, channel, position] = value
        assert any(what in p for p in check_valid(valid.replace(x=bad))), what
    assert any("lengths" in p for p in check_valid(valid.replace(lengths=torch.zeros(8, dtype=torch.long))))
    with pytest.raises(AssertionError, match="labels were not carried"):
        assert_valid(valid, like=valid.replace(labels=valid.labels + 1))


# -- seeds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HANDCRAFTED))
def test_same_seed_same_output_other_seed_other_output(name: str) -> None:
    aug = build(name, same_class=False) if name in MIXING else build(name)
    batch = make_batch(3)
    a, b, c = aug(batch, gen(7)), aug(batch, gen(7)), aug(batch, gen(8))
    assert torch.equal(a.x, b.x) and torch.equal(a.lengths, b.lengths)
    assert torch.equal(a.soft_labels, b.soft_labels) if a.soft_labels is not None else b.soft_labels is None
    differs = not torch.equal(a.x, c.x)
    assert differs == (name not in RANDOM_FREE)


def test_global_rng_is_not_used() -> None:
    batch = make_batch(4)
    for name in HANDCRAFTED:
        torch.manual_seed(0)
        a = build(name)(batch, gen(1))
        torch.manual_seed(123)
        b = build(name)(batch, gen(1))
        assert torch.equal(a.x, b.x), name


# -- what each may alter --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HANDCRAFTED))
def test_alters_only_allowed_features(name: str) -> None:
    aug = build(name)
    batch = make_batch(5, b=256)
    out = aug(batch, gen(0))
    changed = (out.x != batch.x).any(2).float().mean(0)  # (3,) share of flows changed per feature
    for i, feature in enumerate(("size", "direction", "iat")):
        p = aug.alters[feature]
        if p == 0:
            assert changed[i] == 0, f"{name} altered {feature}"
        elif name not in ("time_shift",):  # a positive shift leaves a flow alone
            assert changed[i] > 0, f"{name} never altered {feature}"
    if aug.family in ("amplitude", "mask", "mixing") or name in ("flip", "permutation", "cutmix", "change_rtt"):
        assert torch.equal(out.lengths, batch.lengths)


def test_amplitude_probabilities_follow_the_table() -> None:
    batch = make_batch(6, b=4000, length=20)
    batch = batch.index(batch.lengths >= 5)
    for name in ("gaussian_noise", "sine_wrapup"):
        changed = (build(name)(batch, gen(0)).x != batch.x).any(2).float().mean(0)
        assert abs(changed[SIZE] - 0.5) < 0.05 and changed[DIRECTION] == 0 and abs(changed[IAT] - 0.5) < 0.05


# -- the rules --------------------------------------------------------------------------------


def real_packets(batch: FlowBatch, i: int) -> np.ndarray:
    """`(n, 3)` packets of flow `i`."""
    return batch.x[i, :, : int(batch.lengths[i])].T.numpy()


def times_of(batch: FlowBatch, i: int, codec: FlowCodec = FlowCodec()) -> np.ndarray:
    return np.cumsum(codec.gaps_from_iat(batch.x[i, IAT, : int(batch.lengths[i])].double()).numpy())


def test_noise_free_settings_are_identities() -> None:
    batch = make_batch(7)
    for aug in (
        build("gaussian_noise", sigma=0.0),
        build("bernoulli_mask", p=0.0),
        build("wrap", p=0.0),
        build("constant_wrapup", low=1.0, high=1.0),
        build("gaussian_wrapup", amplitude=0.0),
    ):
        out = aug(batch, gen(0))
        assert torch.equal(out.x, batch.x) and torch.equal(out.lengths, batch.lengths), aug


def test_bernoulli_mask_one_zeroes_everything() -> None:
    batch = make_batch(8)
    out = build("bernoulli_mask", p=1.0)(batch, gen(0))
    real = batch.mask()
    assert (out.x[:, SIZE][real] == 0).all() and (out.x[:, IAT][real] == 0).all()
    assert (out.x[:, DIRECTION][real] == 1).all()


def test_window_mask_zeroes_one_window_of_packets() -> None:
    batch = make_batch(9, b=128)
    out = build("window_mask", window=3)(batch, gen(0))
    hit = (out.x != batch.x).any(1)  # (B, L)
    zeroed = (out.x[:, SIZE] == 0) & (out.x[:, IAT] == 0) & (out.x[:, DIRECTION] == 1)
    assert not (hit & ~zeroed).any()
    for i in range(len(batch)):
        idx = torch.nonzero(hit[i])[:, 0]
        if len(idx):
            assert idx.max() - idx.min() < 3


def test_interpolation_inserts_means() -> None:
    x = torch.zeros(1, 3, 20)
    x[0, :, :2] = torch.tensor([[0.2, 0.6], [1.0, -1.0], [0.0, 0.4]])
    out = build("interpolation")(FlowBatch(x, torch.tensor([2]), torch.tensor([0])), gen(0))
    assert out.lengths.item() == 3
    torch.testing.assert_close(out.x[0, :, :3], torch.tensor([[0.2, 0.4, 0.6], [1.0, 1.0, -1.0], [0.0, 0.2, 0.4]]))
    full = make_batch(10, b=32)
    full = full.index(full.lengths == 20)
    out = build("interpolation")(full, gen(0))
    assert (out.lengths == 20).all()


def test_flip_mirrors_times_and_twice_is_identity() -> None:
    batch = make_batch(11)
    flipped = build("flip")(batch, gen(0))
    for i in range(len(batch)):
        t, tf = times_of(batch, i), times_of(flipped, i)
        np.testing.assert_allclose(tf, (t[-1] - t)[::-1], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(real_packets(flipped, i)[:, :2], real_packets(batch, i)[::-1, :2])
    torch.testing.assert_close(build("flip")(flipped, gen(0)).x, batch.x)


def test_permutation_moves_whole_segments() -> None:
    batch = distinct_sizes(make_batch(12))
    out = build("permutation", n_segments=3)(batch, gen(0))
    moved = 0
    for i in range(len(batch)):
        a, b = real_packets(batch, i), real_packets(out, i)
        src = [int(np.flatnonzero(a[:, SIZE] == size)[0]) for size in b[:, SIZE]]
        assert sorted(src) == list(range(len(a)))
        np.testing.assert_array_equal(b[:, DIRECTION], a[src, DIRECTION])
        # at most 3 segments: at most 2 places where consecutive packets were not neighbours
        assert sum(1 for u, v in itertools.pairwise(src) if v != u + 1) <= 2
        moved += src != sorted(src)
    assert moved > len(batch) // 2


def test_translation_shifts_left_or_right() -> None:
    batch = make_batch(13, b=128)
    out = build("translation", max_shift=3)(batch, gen(0))
    sides = set()
    for i in range(len(batch)):
        n = int(batch.lengths[i])
        a, b = batch.x[i, SIZE].numpy(), out.x[i, SIZE].numpy()
        lefts = [s for s in range(1, 4) if s < n and np.array_equal(b[: n - s], a[s:n]) and out.lengths[i] == n - s]
        rights = [
            s
            for s in range(1, 4)
            if np.array_equal(b[s : min(n + s, 20)], a[: min(n, 20 - s)])
            and (b[:s] == 0).all()
            and out.lengths[i] == min(n + s, 20)
        ]
        assert lefts or rights or n == 1, i
        sides |= {"left"} if lefts else set()
        sides |= {"right"} if rights else set()
    assert sides == {"left", "right"}


def distinct_sizes(batch: FlowBatch) -> FlowBatch:
    """`batch` with sizes 1/(L+1), 2/(L+1), ... so that packets can be told apart."""
    x = batch.x.clone()
    x[:, SIZE] = (torch.arange(batch.n_packets) + 1.0) / (batch.n_packets + 1) * batch.mask()
    return batch.replace(x=x)


def assert_survivors_keep_their_times(batch: FlowBatch, out: FlowBatch) -> int:
    """Every output flow is a subsequence of its input, arrival times kept; returns the
    number of flows that lost packets."""
    shortened = 0
    for i in range(len(batch)):
        a, b = real_packets(batch, i), real_packets(out, i)
        ta, tb = times_of(batch, i), times_of(out, i)
        j = 0
        match = []
        for row in b:  # greedy subsequence match on (size, direction)
            while j < len(a) and not np.array_equal(a[j, :2], row[:2]):
                j += 1
            assert j < len(a), f"flow {i}: a packet that was not in the input"
            match.append(j)
            j += 1
        np.testing.assert_allclose(tb, ta[match] - ta[match[0]], rtol=1e-4, atol=1e-6)
        shortened += len(b) < len(a)
    return shortened


@pytest.mark.parametrize("name", ["packet_loss", "tcbench_packet_loss", "time_shift"])
def test_time_drops_keep_arrival_times(name: str) -> None:
    batch = distinct_sizes(make_batch(14))
    out = build(name)(batch, gen(0))
    assert assert_survivors_keep_their_times(batch, out) > 0


def test_time_shift_drops_a_prefix_only() -> None:
    batch = make_batch(15, b=128)
    out = build("time_shift")(batch, gen(0))
    dropped = batch.lengths - out.lengths
    for i in torch.nonzero(dropped)[:, 0].tolist():
        k = int(dropped[i])
        np.testing.assert_array_equal(real_packets(out, i)[:, :2], real_packets(batch, i)[k:, :2])
        assert times_of(batch, i)[k - 1] < 1.0  # only packets of the first second can go


def test_change_rtt_scales_gaps_by_one_factor() -> None:
    batch = make_batch(16)
    out = build("change_rtt")(batch, gen(0))
    codec = FlowCodec()
    for i in range(len(batch)):
        g0 = codec.gaps_from_iat(batch.x[i, IAT].double())
        g1 = codec.gaps_from_iat(out.x[i, IAT].double())
        ratio = (g1[g0 > 1e-3] / g0[g0 > 1e-3]).numpy()
        if len(ratio):
            assert 0.5 - 1e-4 <= ratio.min() and ratio.max() <= 1.5 + 1e-4
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3)


def test_spike_noise_adds_at_most_max_spikes_upward() -> None:
    batch = make_batch(17, b=128)
    out = build("spike_noise", max_spikes=2, sigma=0.3)(batch, gen(0))
    diff = out.x - batch.x
    assert (diff >= 0).all() and (diff > 0).any()
    assert ((diff != 0).sum(2) <= 2).all()
    assert (diff[batch.x == 0] == 0).all()  # only non-zero values get spikes


@pytest.mark.parametrize("name", ["cutmix", "mixup"])
def test_same_class_mixing_keeps_labels_and_mixes_within_class(name: str) -> None:
    batch = make_batch(18)
    out = build(name)(batch, gen(0))
    assert out.soft_labels is None and torch.equal(out.labels, batch.labels)
    if name == "cutmix":  # every patched packet comes from a flow of the same class, same position
        for i in range(len(batch)):
            moved = (out.x[i] != batch.x[i]).any(0)
            if moved.any():
                same = batch.labels == batch.labels[i]
                donors = (batch.x[same][:, :, moved] == out.x[i][:, moved]).all(2).all(1)
                assert donors.any()


def test_cross_class_mixing_sets_soft_labels() -> None:
    batch = make_batch(19)
    for name in MIXING:
        out = build(name, same_class=False)(batch, gen(0))
        own = out.soft_labels.gather(1, batch.labels[:, None])[:, 0]
        assert (own >= 0.5 - 1e-6).all() and torch.equal(out.labels, batch.labels)
        assert (out.soft_labels.max(1).values < 1).any()


def test_partners_and_beta() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    p = partners(labels, True, gen(0))
    assert torch.equal(labels[p], labels)
    assert p[5] == 5 and (p[:5] != torch.arange(5)).all()
    q = partners(labels, False, gen(0))
    assert (q != torch.arange(6)).all() and sorted(q.tolist()) == list(range(6))
    lam = sample_beta(0.2, 20000, gen(0), torch.device("cpu"))
    assert abs(lam.mean() - 0.5) < 0.02 and abs(lam.var() - 1 / 5.6) < 0.01  # Beta(a, a) var = 1 / (4 (2a + 1))
    lam = sample_beta(2.0, 20000, gen(1), torch.device("cpu"))
    assert abs(lam.var() - 1 / 20) < 0.005


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "param"),
    [
        ("gaussian_noise", {"sigma": -1.0}, "sigma"),
        ("spike_noise", {"max_spikes": 0}, "max_spikes"),
        ("gaussian_wrapup", {"amplitude": 1.0}, "amplitude"),
        ("gaussian_wrapup", {"width": 0.0}, "width"),
        ("sine_wrapup", {"min_cycles": 2.0, "max_cycles": 1.0}, "max_cycles"),
        ("constant_wrapup", {"low": -0.1}, "low"),
        ("bernoulli_mask", {"p": 1.5}, "p"),
        ("window_mask", {"window": 0}, "window"),
        ("packet_loss", {"dt": 0.0}, "dt"),
        ("packet_loss", {"iat_unit": 0.0}, "iat_unit"),
        ("translation", {"max_shift": 0}, "max_shift"),
        ("wrap", {"p": -0.1}, "p"),
        ("permutation", {"n_segments": 1}, "n_segments"),
        ("cutmix", {"max_fraction": 0.0}, "max_fraction"),
        ("cutmix", {"same_class": False}, "num_classes"),
        ("change_rtt", {"low": 2.0, "high": 1.0}, "high"),
        ("time_shift", {"max_shift": -1.0}, "max_shift"),
        ("tcbench_packet_loss", {"iat_max": 1e-4}, "iat_max"),
        ("mixup", {"alpha": 0.0}, "alpha"),
        # upper bounds: beyond them outputs stop being decodable flows
        ("constant_wrapup", {"high": 100.0}, "high"),
        ("change_rtt", {"high": 1e300}, "high"),
        ("gaussian_noise", {"sigma": 50.0}, "sigma"),
        ("spike_noise", {"sigma": 50.0}, "sigma"),
        ("time_shift", {"max_shift": 1e9}, "max_shift"),
        ("tcbench_packet_loss", {"half_window": 1e9}, "half_window"),
        ("mixup", {"same_class": False, "num_classes": 1}, "num_classes"),
    ],
)
def test_bad_parameters_raise_naming_them(name: str, kwargs: dict, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        HANDCRAFTED[name](**kwargs)


# -- composition from YAML and combinators ----------------------------------------------------


@pytest.mark.parametrize("name", list(HANDCRAFTED))
def test_config_file_builds_its_class(name: str) -> None:
    aug = build_augmentation(ROOT / "configs/augment" / f"{name}.yaml")
    assert type(aug) is HANDCRAFTED[name]


def test_classifier_module_takes_augmentations_from_yaml() -> None:
    from jsonargparse import ArgumentParser

    from tsda.classifier.module import ClassifierModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ClassifierModule, "model", sub_configs=True)
    cfg = parser.parse_args(
        ["--model.num_classes", "3", "--model.augmentation", str(ROOT / "configs/augment/translation.yaml")]
    )
    assert type(parser.instantiate_classes(cfg).model.augmentation).__name__ == "Translation"
    stacked = {
        "class_path": class_path(Compose),
        "init_args": {
            "augmentations": [
                {"class_path": class_path(HANDCRAFTED["bernoulli_mask"]), "init_args": {"p": 0.2}},
                {"class_path": class_path(HANDCRAFTED["window_mask"])},
            ]
        },
    }
    aug = build_augmentation(stacked)
    assert [type(a).__name__ for a in aug.augmentations] == ["BernoulliMask", "WindowMask"]
    batch = make_batch(20)
    assert_valid(aug(batch, gen(0)), like=batch)
    with pytest.raises(ValueError):
        build_augmentation("no_such_augmentation")


def test_fgnet_experiment_config_is_consistent() -> None:
    import yaml

    from tsda.data.datamodule import FlowDataModule

    cfg = yaml.safe_load((ROOT / "configs/experiment/fgnet_translation.yaml").read_text())
    model = cfg["model"]["init_args"]
    assert cfg["model"]["class_path"] == "tsda.classifier.module.ClassifierModule" and model["policy"] == "double"
    assert type(build_augmentation(model["augmentation"])).__name__ == "Translation"
    dm = FlowDataModule(**cfg["data"])  # every data key is a FlowDataModule argument; nothing is read yet
    assert dm.hparams.invalid_rows == "drop" and dm.hparams.path.endswith("shared/data/fgnet/d1.parquet")


def test_combinators_stay_valid_and_honour_p() -> None:
    batch = make_batch(21, b=200)
    none = RandomApply(build("translation"), p=0.0)(batch, gen(0))
    assert torch.equal(none.x, batch.x)
    one_of = OneOf([build("flip"), build("mixup", same_class=False)])(batch, gen(0))
    assert_valid(one_of, like=batch)
    assert one_of.soft_labels is not None and one_of.soft_labels.shape == (200, K)


# -- batch policies ---------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "rows"), [("double", 2), ("replace", 1)])
def test_batch_policies(policy: str, rows: int) -> None:
    from tsda.classifier.module import ClassifierModule

    batch = make_batch(22, b=16)
    module = ClassifierModule(
        num_classes=K, augmentation=build("mixup", same_class=False), policy=policy, augment_p=1.0
    )
    out = module.training_batch(batch)
    assert len(out) == rows * len(batch)
    assert out.soft_labels is not None and out.soft_labels.shape == (rows * 16, K)
    assert_valid(out, num_classes=K)
    if policy == "double":
        assert torch.equal(out.x[:16], batch.x)
    plain = ClassifierModule(num_classes=K, augmentation=None, policy=policy)
    assert len(plain.training_batch(batch)) == len(batch)


# -- dataset enlargement ----------------------------------------------------------------------


def small_table(n: int = 60, seed: int = 0) -> FlowTable:
    sizes, dirs, times, lengths, labels = flows(seed, n, 30)
    lengths = np.maximum(lengths, 12)
    real = np.arange(30)[None] < lengths[:, None]
    return FlowTable(
        labels=labels,
        class_names=("a", "b", "c"),
        sizes=np.minimum(sizes, 1460) * real,
        directions=(dirs * real).astype(np.int8),
        times=times * real,
        lengths=lengths,
        packets=lengths + 5,
        meta={"capture": np.array([f"c{i % 4}" for i in range(n)])},
    )


def test_enlarge_writes_originals_and_copies(tmp_path: Path) -> None:
    from tsda.augment.enlarge import enlarge_to_parquet
    from tsda.data.datamodule import FlowDataModule
    from tsda.data.sources import read_parquet

    table, codec = small_table(), FlowCodec()
    out = enlarge_to_parquet(table, codec, build("translation"), copies=2, out=tmp_path / "e.parquet", seed=1)
    back = read_parquet(out, meta_columns=("augmentation", "source_row", "capture"))
    n = len(table)
    assert len(back) == 3 * n and back.class_names == table.class_names
    assert list(back.meta["augmentation"][:n]) == ["original"] * n
    assert set(back.meta["augmentation"][n:]) == {"Translation(max_shift=4)"}
    np.testing.assert_array_equal(back.meta["source_row"], np.tile(np.arange(n), 3))
    np.testing.assert_array_equal(back.labels, np.tile(table.labels, 3))
    np.testing.assert_array_equal(back.packets, np.tile(table.packets, 3))
    originals = back.take(np.arange(n))
    np.testing.assert_array_equal(originals.lengths, np.minimum(table.lengths, 20))
    np.testing.assert_allclose(originals.times[:, :20], table.times[:, :20] * (np.arange(20) < 20), atol=1e-5)
    copies = codec.encode(back.take(np.arange(n, 3 * n)))
    assert_valid(copies, codec)
    assert not torch.equal(copies.x[:n], codec.encode(originals).x)
    # the same seed writes the same file; the Parquet source reads it as a dataset
    again = enlarge_to_parquet(table, codec, build("translation"), copies=2, out=tmp_path / "f.parquet", seed=1)
    assert read_parquet(again).sizes.tolist() == back.sizes.tolist()
    dm = FlowDataModule(path=str(out), min_class_size=5, split="none")
    assert len(dm.split_table("test")) == 3 * n


# -- command line -----------------------------------------------------------------------------


def test_cli_list_shows_every_augmentation(capsys: pytest.CaptureFixture) -> None:
    from tsda.commands.augment import main

    main(["list"])
    text = capsys.readouterr().out
    for name, cls in AUGMENTATIONS.items():
        assert any(line.split()[:2] == [name, cls.family] for line in text.splitlines()), name
    assert "max_shift=4" in text
    assert "ckpt='', pool_file=''" in text  # the generator: a checkpoint or a pool file


def test_cli_preview_and_enlarge(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tsda.commands.augment import main
    from tsda.data.datamodule import FlowDataModule
    from tsda.data.sources import read_parquet, write_parquet

    source = write_parquet(small_table(120), tmp_path / "src.parquet")
    common = ["--data.path", str(source), "--data.min_class_size", "5"]
    main(["preview", "flip", "--out", str(tmp_path / "p.png"), "--flows", "2", *common])
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    main(
        [
            "enlarge",
            "--augment",
            str(ROOT / "configs/augment/permutation.yaml"),
            "--copies",
            "1",
            "--out",
            str(tmp_path / "e.parquet"),
            *common,
        ]
    )
    back = read_parquet(tmp_path / "e.parquet", meta_columns=("augmentation", "split"))
    splits = FlowDataModule(path=str(source), min_class_size=5).splits
    assert len(back) == 2 * len(splits["train"]) + len(splits["val"]) + len(splits["test"])
    assert set(back.meta["augmentation"]) == {"original", "Permutation(n_segments=4)"}
    assert set(back.meta["split"][back.meta["augmentation"] != "original"]) == {"train"}
    with pytest.raises(ValueError, match="unknown augmentation"):
        main(["preview", "nope", "--out", str(tmp_path / "x.png"), *common])


@pytest.mark.slow
def test_fit_with_an_augmentation_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The YAML augmentation reaches training: every training step's batch goes through it
    (policy double: 2B flows per step) and the checkpoint records it."""
    from tsda.augment.order import Translation
    from tsda.commands.fit import run_fit
    from tsda.lit.checkpoint import read_checkpoint

    calls: list[int] = []
    original = Translation.__call__

    def counted(self, batch, generator):
        calls.append(len(batch))
        return original(self, batch, generator)

    monkeypatch.setattr(Translation, "__call__", counted)
    cli = run_fit(
        [
            "-c",
            str(ROOT / "configs/experiment/synthetic_baseline.yaml"),
            "--model.init_args.augmentation",
            str(ROOT / "configs/augment/translation.yaml"),
            "--model.init_args.backbone_kwargs",
            "{width: 8}",
            "--latent_plot",
            "false",
            "--data.synthetic_scale",
            "0.02",
            "--data.synthetic_apps",
            "4",
            "--data.min_class_size",
            "10",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--run_dir",
            str(tmp_path / "run"),
        ]
    )
    steps = cli.trainer.num_training_batches
    assert isinstance(cli.model.augmentation, Translation)
    assert len(calls) == steps and steps > 0 and sum(calls) == len(cli.datamodule.splits["train"])
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["augmentation_repr"] == repr(cli.model.augmentation)
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("name", ["change_rtt", "time_shift", "tcbench_packet_loss"])
def test_time_based_augmentations_take_the_data_codec(name: str) -> None:
    """Unset iat settings follow the codec of the run (`setup`); set ones must match it."""
    from tsda.augment.base import AugmentContext

    codec = FlowCodec(n_packets=20, iat_unit=1e-4, iat_max=30.0)
    sizes, dirs, times, lengths, labels = flows(0, 64, 20)
    x, ln = codec.encode_arrays(sizes, dirs, times, lengths)
    batch = FlowBatch(x, ln, torch.from_numpy(labels))
    context = AugmentContext(device=torch.device("cpu"), class_names=("a",), generator=gen(0), codec=codec)
    aug = build(name)
    before = aug._codec
    aug.setup(context)
    assert aug._codec.iat_unit == 1e-4 and aug._codec.iat_max == 30.0 and before != aug._codec
    assert_valid(aug(batch, gen(1)), like=batch)
    with pytest.raises(ValueError, match="iat_max"):
        build(name, iat_max=10.0).setup(context)
    build(name, iat_unit=1e-4, iat_max=30.0).setup(context)  # explicit and equal: fine


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sequential_cumsum_is_torch_cumsum_to_the_bit(dtype: torch.dtype) -> None:
    """The deterministic running sum `tsda.seeds.cumsum` takes on CUDA under deterministic
    algorithms (where torch's float cumsum raises) gives torch.cumsum's values exactly."""
    from tsda.seeds import cumsum, sequential_cumsum

    x = torch.randn(64, 20, generator=torch.Generator().manual_seed(0), dtype=dtype) * 1e3
    for dim in (0, 1):
        assert torch.equal(sequential_cumsum(x, dim), torch.cumsum(x, dim))
    assert torch.equal(cumsum(x, 1), torch.cumsum(x, 1))  # on the CPU: torch's own kernel
