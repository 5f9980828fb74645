"""Magnitudes of the hand-crafted ops and the policies built on them (TrivialAugment,
RandAugment): the mappings, per-flow ops, determinism, YAML and bad input."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from support.augment import gen, make_batch

from tsda.augment.base import Augmentation, AugmentContext, Compose, Identity, OneOf
from tsda.augment.catalog import HANDCRAFTED, POLICIES, build_augmentation, class_path
from tsda.augment.magnitude import MAGNITUDES, from_magnitude
from tsda.augment.mixing import PairAugmentation
from tsda.augment.ops import flow_times, last_time
from tsda.augment.order import CutMix, Flip, Interpolation
from tsda.augment.policy import FAMILIES, RandAugment, TrivialAugment
from tsda.augment.traffic import TimeShift
from tsda.augment.validity import assert_valid
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec

ROOT = Path(__file__).resolve().parents[2]
PARAMETERED = [cls for cls, spec in MAGNITUDES.items() if spec.param]
GRID = (0.0, 0.25, 0.5, 1.0)


def strength(out: FlowBatch, batch: FlowBatch) -> float:
    """Mean change of the values plus mean change of the lengths (packets dropped or added)."""
    return float((out.x - batch.x).abs().mean() + (out.lengths - batch.lengths).abs().float().mean())


def long_flows(seed: int) -> FlowBatch:
    """Flows lasting over 2.5 s: the time-based drops' all-packets-lost fallback (flow left
    unchanged) never triggers within their ranges, so more magnitude means more dropped."""
    batch = make_batch(seed, b=1500)
    return batch.index(last_time(flow_times(batch.x, FlowCodec()), batch.lengths) > 2.5)


# -- magnitudes ----------------------------------------------------------------------------


def test_every_handcrafted_op_has_a_magnitude() -> None:
    assert set(MAGNITUDES) == set(HANDCRAFTED.values())
    assert {cls for cls, spec in MAGNITUDES.items() if not spec.param} == {Flip, Interpolation}


@pytest.mark.parametrize("cls", PARAMETERED, ids=lambda c: c.__name__)
def test_magnitude_bounds_and_default(cls: type[Augmentation]) -> None:
    spec = MAGNITUDES[cls]
    values = [spec.value(m / 20) for m in range(21)]
    assert values[0] == spec.bottom and values[-1] == spec.top
    assert all(a <= b for a, b in itertools.pairwise(values))
    batch = make_batch(1, b=32)
    for m in (0.01, 0.3, 0.77, 1.0):  # every setting builds and gives valid flows
        assert_valid(from_magnitude(cls, m)(batch, gen(0)), FlowCodec(), like=batch)
    # today's default sits at the stated m
    m0 = spec.default_m(cls)
    assert 0.0 <= m0 <= 1.0 and repr(from_magnitude(cls, m0)) == repr(cls())
    assert f"default m={m0:.2g}" in spec.describe(cls)


@pytest.mark.parametrize("cls", PARAMETERED, ids=lambda c: c.__name__)
def test_magnitude_zero_is_the_identity_and_strength_grows(cls: type[Augmentation]) -> None:
    batch = long_flows(2)
    assert isinstance(from_magnitude(cls, 0.0), Identity)
    out = from_magnitude(cls, 0.0)(batch, gen(0))
    assert torch.equal(out.x, batch.x) and torch.equal(out.lengths, batch.lengths)
    # the op's own limit: a tiny magnitude changes almost nothing (TimeShift excepted: any
    # negative shift, however small, drops the packet at t = 0)
    if not MAGNITUDES[cls].integer and cls is not TimeShift:
        assert strength(from_magnitude(cls, 1e-3)(batch, gen(0)), batch) < 0.02
    levels = [strength(from_magnitude(cls, m)(batch, gen(0)), batch) for m in GRID]
    assert all(a < b for a, b in itertools.pairwise(levels)), levels


def test_ops_without_a_parameter_are_themselves_at_every_m() -> None:
    batch = make_batch(3)
    for cls in (Flip, Interpolation):
        outs = [from_magnitude(cls, m)(batch, gen(0)).x for m in (0.0, 0.6, 1.0)]
        assert all(torch.equal(o, cls()(batch, gen(0)).x) for o in outs)


@pytest.mark.parametrize("m", [-0.1, 1.5, math.nan])
def test_magnitude_out_of_range_raises(m: float) -> None:
    with pytest.raises(ValueError, match="magnitude"):
        from_magnitude(HANDCRAFTED["wrap"], m)
    with pytest.raises(ValueError, match=r"TrivialAugment\.m"):
        TrivialAugment(magnitude="fixed", m=m)
    with pytest.raises(ValueError, match=r"RandAugment\.m"):
        RandAugment(m=m)


# -- policies: which op each flow gets -------------------------------------------------------


def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Augmentation, int]]:
    """Record each call of an op on its flows (`apply_to`): `(op, number of flows)`."""
    calls: list[tuple[Augmentation, int]] = []
    for base in (Augmentation, PairAugmentation):  # PairAugmentation overrides apply_to
        original = base.apply_to

        def recorded(self, batch, rows, generator, _original=original):
            calls.append((self, rows.stop - rows.start))
            return _original(self, batch, rows, generator)

        monkeypatch.setattr(base, "apply_to", recorded)
    return calls


def flows_per_op(calls: list[tuple[Augmentation, int]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op, n in calls:
        counts[op.name] = counts.get(op.name, 0) + n
    return counts


def test_per_flow_op_counts_follow_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy(monkeypatch)
    classes = list(HANDCRAFTED.values())
    weights = [float(i % 4) for i in range(len(classes))]  # some ops never drawn
    b = 6000
    out = TrivialAugment(magnitude="fixed", m=0.5, weights=weights)(make_batch(4, b=b), gen(0))
    counts = flows_per_op(calls)
    assert len(out) == b and sum(counts.values()) == b  # every flow exactly one op
    for cls, w in zip(classes, weights):
        expected = b * w / sum(weights)
        assert abs(counts.get(cls.__name__, 0) - expected) <= 5 * math.sqrt(expected) + 1e-9, cls.__name__


def test_each_flow_gets_its_own_op() -> None:
    """Flip is deterministic: the flows that drew it equal Flip's output row for row; the
    others were window-masked in place (only zeroed values changed)."""
    batch = make_batch(5, b=2000)
    batch = batch.index(batch.lengths >= 2)
    x = batch.x.clone()
    x[:, 0] = (torch.arange(batch.n_packets) + 1.0) / 21 * batch.mask()  # distinct sizes: a flip shows
    batch = batch.replace(x=x)
    out = TrivialAugment(ops=["flip", "window_mask"], magnitude="fixed", m=1.0, weights=[3, 1])(batch, gen(1))
    flipped = (out.x == Flip()(batch, gen(0)).x).flatten(1).all(1)  # (B,)
    changed = (out.x != batch.x).any(1)  # (B, L) packets that changed
    zeroed = (out.x[:, 0] == 0) & (out.x[:, 1] == 1) & (out.x[:, 2] == 0)  # (B, L) the masks' zero
    masked = changed.any(1) & ~(changed & ~zeroed).any(1)  # (B,) only zeroed packets changed
    assert torch.equal(flipped, ~masked)  # each flow: exactly one of the two
    assert abs(flipped.float().mean() - 0.75) < 0.05


def test_uniform_magnitudes_use_every_level(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy(monkeypatch)
    out = TrivialAugment(ops=["wrap"], levels=5)(make_batch(6, b=400), gen(0))
    wrap = HANDCRAFTED["wrap"]
    assert sorted(repr(op) for op, _ in calls) == sorted(repr(from_magnitude(wrap, m)) for m in (0.25, 0.5, 0.75, 1.0))
    assert len(out) == 400 and 400 - sum(n for _, n in calls) > 0  # the rest drew m = 0: unchanged


def test_rand_augment_applies_n_distinct_ops_per_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy(monkeypatch)
    batch = make_batch(7, b=500)
    batch = batch.index(batch.lengths >= 4)
    out = RandAugment(n=2, m=1.0, ops=["flip", "bernoulli_mask"])(batch, gen(0))
    assert flows_per_op(calls) == {"Flip": len(batch), "BernoulliMask": len(batch)}  # both, once each, on every flow
    # drawn with replacement, a quarter of the flows would be flipped twice (back)
    assert not (out.x == batch.x).flatten(1).all(1).any()


def test_a_point_range_applies_only_that_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy(monkeypatch)
    ops = ["wrap", "translation"]
    out = TrivialAugment(ops=ops, levels=5, ranges=[(0.5, 0.5), (0.25, 0.75)])(make_batch(12, b=600), gen(0))
    wrap, translation = (HANDCRAFTED[o] for o in ops)
    expected = {repr(wrap())} | {repr(from_magnitude(translation, m)) for m in (0.25, 0.375, 0.5, 0.625, 0.75)}
    assert {repr(op) for op, _ in calls} <= expected and repr(wrap()) in {repr(op) for op, _ in calls}
    assert sum(n for _, n in calls) == len(out) == 600  # no flow at m = 0: every flow augmented


def test_full_ranges_and_one_round_are_trivial_augment() -> None:
    batch = make_batch(13)
    plain = TrivialAugment(ops="order")(batch, gen(2))
    spelled = TrivialAugment(ops="order", ranges=[(0.0, 1.0)] * 7, n=1)(batch, gen(2))
    assert torch.equal(plain.x, spelled.x) and torch.equal(plain.lengths, spelled.lengths)


def test_n_rounds_apply_n_ops_per_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy(monkeypatch)
    batch = make_batch(14, b=300)
    out = TrivialAugment(ops=["flip", "bernoulli_mask"], magnitude="fixed", m=1.0, n=2)(batch, gen(0))
    assert sum(n for _, n in calls) == 2 * len(batch)  # every flow two ops
    flips = flows_per_op(calls)["Flip"]
    assert 0.4 < flips / (2 * len(batch)) < 0.6  # each round drawn independently
    assert_valid(out, FlowCodec(), like=batch)


def test_mixing_ops_take_partners_from_the_whole_batch() -> None:
    batch = make_batch(8, b=64)
    row = int(torch.nonzero((batch.lengths >= 6) & (torch.bincount(batch.labels)[batch.labels] > 1))[0, 0])
    alone = CutMix(max_fraction=1.0)(batch.index(slice(row, row + 1)), gen(0))
    assert torch.equal(alone.x, batch.x[row : row + 1])  # a one-flow batch: its own partner
    within = CutMix(max_fraction=1.0).apply_to(batch, slice(row, row + 1), gen(0))
    assert not torch.equal(within.x, batch.x[row : row + 1]) and torch.equal(within.labels, batch.labels[row : row + 1])


# -- determinism, validity, composition ------------------------------------------------------


@pytest.mark.parametrize("policy", [TrivialAugment(), RandAugment(), TrivialAugment(ops="mixing", levels=3)], ids=repr)
def test_same_seed_same_output_and_valid(policy: Augmentation) -> None:
    batch = make_batch(9)
    a, b, c = policy(batch, gen(3)), policy(batch, gen(3)), policy(batch, gen(4))
    assert torch.equal(a.x, b.x) and torch.equal(a.lengths, b.lengths) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.x, c.x)
    torch.manual_seed(0)  # the global generator plays no part
    assert torch.equal(policy(batch, gen(3)).x, a.x)
    for seed, (size, length) in enumerate([(1, 1), (5, 3), (64, 20)]):
        small = make_batch(seed, b=size, length=length)
        assert_valid(policy(small, gen(seed)), FlowCodec(n_packets=length), like=small, num_classes=3)


def test_ops_by_name_family_or_all() -> None:
    assert len(TrivialAugment()._ops) == 18
    for family in FAMILIES:
        assert {c.family for c in TrivialAugment(ops=family)._ops} == {family}
    chosen = RandAugment(n=1, ops=["wrap", "mask", "wrap"])._ops
    assert [c.__name__ for c in chosen] == ["Wrap", "BernoulliMask", "WindowMask"]


def test_policies_from_yaml_compose_and_setup() -> None:
    for name, cls in POLICIES.items():
        assert type(build_augmentation(ROOT / "configs/augment" / f"{name}.yaml")) is cls
        assert type(build_augmentation(name)) is cls
    spec = {
        "class_path": class_path(Compose),
        "init_args": {
            "augmentations": [
                {
                    "class_path": class_path(TrivialAugment),
                    "init_args": {"ops": ["order", "mask"], "magnitude": "uniform"},
                },
                {"class_path": class_path(RandAugment), "init_args": {"n": 1, "m": 0.3, "ops": "time"}},
            ]
        },
    }
    aug = build_augmentation(spec)
    assert {c.family for c in aug.augmentations[0]._ops} == {"order", "mask"}
    batch = make_batch(10)
    assert_valid(aug(batch, gen(0)), like=batch)
    # setup reaches every setting: the time-based ones take the data's codec
    codec = FlowCodec(n_packets=20, iat_unit=1e-4, iat_max=30.0)
    context = AugmentContext(device=torch.device("cpu"), class_names=("a", "b", "c"), generator=gen(0), codec=codec)
    for a in aug.walk():
        a.setup(context)
    timed = [a for a in aug.walk() if a.family == "time"]
    assert timed and all(a._codec.iat_unit == 1e-4 for a in timed)


def test_one_of_applies_each_candidate_once_on_its_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy(monkeypatch)
    out = OneOf([Flip(), HANDCRAFTED["mixup"](same_class=False, num_classes=3)], weights=[1, 1])(
        make_batch(11, b=300), gen(0)
    )
    counts = flows_per_op(calls)
    assert sum(counts.values()) == 300 and set(counts) == {"Flip", "Mixup"}
    assert out.soft_labels is not None and out.soft_labels.shape == (300, 3)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: TrivialAugment(magnitude="gaussian"), r"TrivialAugment\.magnitude"),
        (lambda: TrivialAugment(levels=1), r"TrivialAugment\.levels"),
        (lambda: TrivialAugment(ops=[]), r"TrivialAugment\.ops"),
        (lambda: TrivialAugment(ops=["wrap", "nope"]), r"TrivialAugment\.ops.*nope"),
        (lambda: TrivialAugment(ops="wrap", weights=[1.0, 2.0]), r"TrivialAugment\.weights"),
        (lambda: TrivialAugment(ops=["wrap", "flip"], weights=[-1.0, 2.0]), r"TrivialAugment\.weights"),
        (lambda: TrivialAugment(ops=["wrap", "flip"], weights=[0.0, 0.0]), r"TrivialAugment\.weights"),
        (lambda: TrivialAugment(n=0), r"TrivialAugment\.n"),
        (lambda: TrivialAugment(ops="wrap", ranges=[(0.2, 1.5)]), r"TrivialAugment\.ranges"),
        (lambda: TrivialAugment(ops="wrap", ranges=[(-0.1, 0.5)]), r"TrivialAugment\.ranges"),
        (lambda: TrivialAugment(ops="wrap", ranges=[(0.7, 0.3)]), r"TrivialAugment\.ranges"),
        (lambda: TrivialAugment(ops=["wrap", "flip"], ranges=[(0.0, 1.0)]), r"TrivialAugment\.ranges"),
        (lambda: TrivialAugment(ops="wrap", magnitude="fixed", ranges=[(0.0, 1.0)]), r"TrivialAugment\.ranges"),
        (lambda: RandAugment(n=0), r"RandAugment\.n"),
        (lambda: RandAugment(n=19), r"RandAugment\.n"),
        (lambda: RandAugment(n=2, ops=["wrap", "flip", "time"], weights=[1, 0, 0, 0, 0]), r"RandAugment\.n"),
        (lambda: RandAugment(ops="everything"), r"RandAugment\.ops"),
    ],
)
def test_bad_input_raises_naming_the_parameter(build, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        build()


def test_cli_reports_bad_policies_and_lists_ranges(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tsda.cli import main

    bad = tmp_path / "bad.yaml"
    for init_args, param in (("{n: 0}", "RandAugment.n"), ("{magnitude: gaussian}", "magnitude")):
        policy = RandAugment if param.startswith("RandAugment") else TrivialAugment
        bad.write_text(f"class_path: {class_path(policy)}\ninit_args: {init_args}\n")
        with pytest.raises(SystemExit) as exc:
            main(["augment", "preview", str(bad), "--out", str(tmp_path / "p.png")])
        assert exc.value.code == 2 and param in capsys.readouterr().err
    main(["augment", "list"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name, cls in HANDCRAFTED.items():
        assert MAGNITUDES[cls].describe(cls) in lines[name], name
    assert set(POLICIES) <= set(lines)
