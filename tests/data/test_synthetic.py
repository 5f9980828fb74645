"""The embedded synthetic dataset: counts, determinism, validity, argument checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tsda.data.synthetic import MIRAGE19_COUNTS, make_synthetic
from tsda.data.table import FlowTable


@pytest.fixture(scope="module")
def small() -> FlowTable:
    return make_synthetic(scale=0.05, seed=0)


def test_mirage19_counts():
    c = MIRAGE19_COUNTS
    assert len(c) == 20 and sum(c) == 64172
    assert c[0] == 7505 and c[-1] == 1013
    assert all(a > b for a, b in itertools.pairwise(c))
    assert all(isinstance(x, int) for x in c)


def test_counts_follow_pattern_at_scale(small):
    counts = small.class_counts()
    expected = [max(20, round(c * 0.05)) for c in MIRAGE19_COUNTS]
    assert counts.tolist() == expected
    assert small.class_names == tuple(f"app{i:02d}" for i in range(20))
    assert (np.diff(counts) <= 0).all() and counts[0] > 5 * counts[-1]
    assert 3000 < small.n_flows < 3400


def test_min_flows_and_repeat_pattern():
    t = make_synthetic(n_apps=23, scale=0.001, seed=1, max_packets=16, min_flows=25)
    assert t.class_counts().tolist() == [25] * 23
    t = make_synthetic(n_apps=22, scale=0.01, seed=1, max_packets=16)
    counts = t.class_counts()
    assert counts[20] == counts[0] and counts[21] == counts[1]
    assert len(set(t.class_names)) == 22


def test_same_seed_identical_other_seed_differs(small):
    again = make_synthetic(scale=0.05, seed=0)
    for name in ("labels", "sizes", "directions", "times", "lengths", "packets"):
        np.testing.assert_array_equal(getattr(small, name), getattr(again, name))
    np.testing.assert_array_equal(small.meta["capture"], again.meta["capture"])
    other = make_synthetic(scale=0.05, seed=1)
    assert other.class_counts().tolist() == small.class_counts().tolist()
    assert not np.array_equal(other.sizes, small.sizes)
    assert not np.array_equal(other.times, small.times)


def test_app_flows_do_not_depend_on_n_apps():
    a = make_synthetic(n_apps=4, scale=0.01, seed=3, max_packets=32)
    b = make_synthetic(n_apps=6, scale=0.01, seed=3, max_packets=32)
    rows = b.labels < 4
    np.testing.assert_array_equal(a.sizes, b.sizes[rows])
    np.testing.assert_array_equal(a.times, b.times[rows])


def test_validity(small):
    t = small
    _n, p = t.sizes.shape
    assert p == 64
    real = np.arange(p)[None, :] < t.lengths[:, None]
    assert (t.lengths == np.minimum(t.packets, p)).all()
    assert (t.lengths >= 1).all()
    s = t.sizes[real]
    assert s.min() >= 1 and s.max() <= 1460
    np.testing.assert_array_equal(s, np.rint(s))
    assert (t.sizes[~real] == 0).all()
    assert (t.times[~real] == 0).all()
    assert (t.directions[~real] == 0).all()
    assert set(np.unique(t.directions[real]).tolist()) == {0, 1}
    assert (t.times[:, 0] == 0).all()
    gaps = np.diff(t.times, axis=1)
    assert (gaps[real[:, 1:]] >= 0).all()
    assert np.isfinite(t.times).all()
    # some flows are short (curation drops them), most are long, some longer than P
    short = (t.packets <= 10).mean()
    assert 0.03 < short < 0.2
    assert (t.packets > p).any()
    # every flow starts like TLS: a client hello upstream then a server answer
    assert (t.directions[:, 0] == 0).all()
    assert (t.directions[t.lengths > 1, 1] == 1).all()
    ch = t.sizes[:, 0]
    assert ch.min() > 100 and ch.max() < 1460
    # MTU-sized bursts exist
    assert np.isin(s, [1448, 1460, 1380]).mean() > 0.1


def test_captures_group_flows(small):
    cap = small.meta["capture"]
    assert cap.dtype == object and isinstance(cap[0], str)
    for k in range(len(small.class_names)):
        caps = np.unique(cap[small.labels == k])
        assert len(caps) >= 3
        assert all(c.startswith(small.class_names[k] + "-") for c in caps)
    # a capture belongs to one app
    owners = {c: set(small.labels[cap == c].tolist()) for c in np.unique(cap)}
    assert all(len(v) == 1 for v in owners.values())
    big = small.labels == 0
    assert len(np.unique(cap[big])) == round(big.sum() / 30)


def test_small_max_packets():
    t = make_synthetic(n_apps=2, scale=0.01, seed=0, max_packets=1)
    assert t.sizes.shape[1] == 1
    assert (t.lengths == 1).all() and (t.times == 0).all()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_apps": 0}, "n_apps"),
        ({"n_apps": 2.5}, "n_apps"),
        ({"scale": 0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"scale": "1"}, "scale"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"max_packets": 0}, "max_packets"),
        ({"min_flows": 0}, "min_flows"),
    ],
)
def test_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_synthetic(**kwargs)
