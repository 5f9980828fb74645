"""FlowCodec: encode/decode round trip, snapping generator output into valid flows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.flows import random_table

from tsda.augment.validity import assert_valid
from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch
from tsda.data.codec import FlowCodec


def test_encode_layout_and_padding() -> None:
    table = random_table(counts=(6, 4), max_packets=32, min_len=2, max_len=30)
    codec = FlowCodec(n_packets=20)
    batch = codec.encode(table)
    assert isinstance(batch, FlowBatch)
    assert batch.x.shape == (10, 3, 20) and batch.x.dtype == torch.float32
    assert torch.equal(batch.lengths, torch.from_numpy(np.minimum(table.lengths, 20)))
    assert torch.equal(batch.labels, torch.from_numpy(table.labels))
    pad = ~batch.mask()  # (B, L)
    assert pad.any(), "the table must have short flows for this test"
    assert (batch.x.permute(0, 2, 1)[pad] == 0).all()
    real = batch.mask()
    assert set(batch.x[:, DIRECTION][real].unique().tolist()) <= {-1.0, 1.0}
    assert ((batch.x[:, SIZE] >= 0) & (batch.x[:, SIZE] <= 1)).all()
    assert (batch.x[:, IAT][:, 0] == 0).all()
    assert (batch.x[:, IAT] >= 0).all()


def test_direction_convention() -> None:
    """tcbench 0 (client to server) -> +1, 1 (server to client) -> -1."""
    codec = FlowCodec(n_packets=3)
    x, _ = codec.encode_arrays(
        np.array([[100.0, 200.0, 0.0]]), np.array([[0, 1, 0]]), np.array([[0.0, 0.5, 0.0]]), np.array([2])
    )
    assert x[0, DIRECTION].tolist() == [1.0, -1.0, 0.0]


def test_round_trip_exact_sizes_and_directions() -> None:
    table = random_table(counts=(40, 40), max_packets=20, min_len=1, max_len=20)
    codec = FlowCodec(n_packets=20)
    back = codec.decode(codec.encode(table), table.class_names)
    np.testing.assert_array_equal(back.lengths, table.lengths)
    np.testing.assert_array_equal(back.labels, table.labels)
    np.testing.assert_array_equal(back.sizes, table.sizes)  # whole bytes <= MTU: exact
    np.testing.assert_array_equal(back.directions, table.directions)
    np.testing.assert_allclose(back.times, table.times, rtol=1e-6, atol=1e-9)
    assert back.class_names == table.class_names


def test_sizes_above_mtu_are_clipped() -> None:
    codec = FlowCodec(n_packets=2)
    x, lengths = codec.encode_arrays(np.array([[5000.0, 10.0]]), np.zeros((1, 2)), np.zeros((1, 2)), np.array([2]))
    sizes, _, _ = codec.decode_arrays(x, lengths)
    assert sizes.tolist() == [[1460.0, 10.0]]


def test_long_gaps_invert_without_clipping() -> None:
    codec = FlowCodec(n_packets=3)
    times = np.array([[0.0, 30.0, 95.5]])  # gaps of 30 s and 65.5 s, beyond iat_max
    x, lengths = codec.encode_arrays(np.ones((1, 3)), np.zeros((1, 3)), times, np.array([3]))
    assert x[0, IAT, 1] > 1.0
    np.testing.assert_allclose(codec.decode_arrays(x, lengths)[2], times, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snap_makes_valid_flows_from_noise(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    raw = 2 * torch.randn(64, 3, 16, generator=g)  # (B, 3, L) arbitrary generator output
    codec = FlowCodec(n_packets=16)
    batch = codec.snap(raw)
    x, real = batch.x, batch.mask()  # (B, 3, L), (B, L)
    assert x.shape == raw.shape
    assert ((x[:, SIZE] >= 0) & (x[:, SIZE] <= 1)).all()
    assert (x[:, DIRECTION].abs()[real] == 1).all()
    assert (x.permute(0, 2, 1)[~real] == 0).all(), "padding must be zeros"
    assert (x[:, IAT] >= 0).all() and (x[:, IAT][:, 0] == 0).all()
    # the length is the run of leading |direction| >= 0.5 in the raw output, at least 1
    present = (raw[:, DIRECTION].abs() >= 0.5).long()
    expected = torch.cumprod(present, dim=1).sum(dim=1).clamp_min(1)
    assert torch.equal(batch.lengths, expected)
    table = codec.decode(batch, tuple("ab"))
    assert (np.diff(table.times, axis=1)[np.arange(15)[None, :] + 1 < table.lengths[:, None]] >= 0).all()
    assert ((table.sizes >= 0) & (table.sizes <= 1460)).all()
    assert np.array_equal(table.sizes, np.rint(table.sizes))


def test_snap_is_idempotent() -> None:
    raw = torch.randn(32, 3, 10, generator=torch.Generator().manual_seed(3))
    codec = FlowCodec(n_packets=10)
    once = codec.snap(raw)
    twice = codec.snap(once.x)
    assert torch.equal(once.x, twice.x) and torch.equal(once.lengths, twice.lengths)


def test_bad_codec_parameters_raise() -> None:
    with pytest.raises(ValueError, match="n_packets"):
        FlowCodec(n_packets=0)
    with pytest.raises(ValueError, match="mtu"):
        FlowCodec(mtu=0)
    with pytest.raises(ValueError, match=r"\(B, 3, L\)"):
        FlowCodec().snap(torch.zeros(4, 2, 20))


def test_snap_keeps_at_least_one_packet() -> None:
    """Raw output whose first position reads as padding (|direction| < 0.5) still gives a
    valid one-packet flow, not a zero-length one."""
    raw = torch.zeros(3, 3, 20)
    raw[1, 1, 0] = 0.2  # an unsure first direction
    raw[2, 1, :5] = -1.0  # five packets
    batch = FlowCodec().snap(raw)
    assert batch.lengths.tolist() == [1, 1, 5]
    assert batch.x[0, 1, 0] == 1.0 and batch.x[0, 1, 1:].abs().sum() == 0
    assert_valid(batch, FlowCodec())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 8),
    length=st.integers(1, 30),
    scale=st.sampled_from([1e-3, 1.0, 10.0, 1e6]),
    special=st.sampled_from([None, "nan", "inf", "-inf", "zero"]),
)
def test_snap_gives_valid_flows_from_arbitrary_tensors(
    seed: int, b: int, length: int, scale: float, special: str | None
) -> None:
    """Property: whatever a generator emits (any scale, NaN, +-inf, all zeros), `snap`
    returns valid flows with at least one packet."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(b, 3, length, generator=g) * scale
    if special == "zero":
        raw.zero_()
    elif special is not None:
        mask = torch.rand(raw.shape, generator=g) < 0.3
        raw[mask] = float(special)
    codec = FlowCodec(n_packets=length)
    batch = codec.snap(raw)
    assert_valid(batch, codec)
    assert bool((batch.lengths >= 1).all())
