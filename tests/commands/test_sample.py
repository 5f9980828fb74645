"""`tsda sample`: label plans, Parquet output read back, determinism, generator options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.tiny import N_PACKETS

from tsda.commands.sample import main
from tsda.data.sources import read_parquet
from tsda.errors import TsdaError
from tsda.generate import plan_labels


@pytest.fixture(scope="module")
def ckpt(tiny_gan_ckpt: Path) -> Path:
    return tiny_gan_ckpt


def test_plan_labels_balances_classes() -> None:
    names = ["a", "b", "c"]
    assert np.bincount(plan_labels(names, per_class=4)).tolist() == [4, 4, 4]
    assert np.bincount(plan_labels(names, n=7)).tolist() == [3, 2, 2]
    assert plan_labels(names, n=4, labels=["c", "a"]).tolist() == [2, 2, 0, 0]
    assert plan_labels(names, per_class=1, labels=["1"]).tolist() == [1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"n": 2, "per_class": 2}, "exactly one"),
        ({"n": 0}, ">= 1"),
        ({"n": 3, "labels": ["zz"]}, "unknown"),
        ({"n": 3, "labels": ["7"]}, "out of range"),
    ],
)
def test_plan_labels_rejects_bad_requests(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_labels(["a", "b"], **kwargs)


def test_sample_writes_a_parquet_that_reads_back(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "syn.parquet"
    main(
        [
            "--ckpt",
            str(ckpt),
            "--per_class",
            "7",
            "--seed",
            "1",
            "--out",
            str(out),
            "--batch_size",
            "5",
            "--no_progress",
        ]
    )
    table = read_parquet(out, max_packets=N_PACKETS)
    assert len(table) == 21 and table.class_counts().tolist() == [7, 7, 7]
    assert set(table.class_names) == {"small_up", "big_down", "mixed"}
    assert (table.lengths >= 1).all() and (table.sizes <= 1460).all()
    real = np.arange(N_PACKETS)[None, :] < table.lengths[:, None]
    assert (np.diff(table.times, axis=1)[real[:, 1:]] >= 0).all()
    generator = pq.read_table(out, columns=["generator"]).column("generator").to_pylist()
    assert set(generator) == {f"GANModule:{ckpt}"}
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temporary left behind


def test_sample_is_deterministic_from_the_seed(ckpt: Path, tmp_path: Path) -> None:
    def draw(seed: int, name: str) -> object:
        out = tmp_path / name
        main(["--ckpt", str(ckpt), "--n", "12", "--seed", str(seed), "--out", str(out), "--no_progress"])
        return pq.read_table(out).drop(["generator"])

    a, b, c = draw(0, "a.parquet"), draw(0, "b.parquet"), draw(1, "c.parquet")
    assert a.equals(b) and not a.equals(c)


def test_unknown_generator_options_are_refused(ckpt: Path, tmp_path: Path) -> None:
    """A cGAN takes no sampler options: refused naming the flag and what it takes, nothing written."""
    with pytest.raises(TsdaError, match=r"--steps: not an option of GANModule \(it takes: latent_scale, prior"):
        main(["--ckpt", str(ckpt), "--n", "3", "--steps", "10", "--out", str(tmp_path / "x.parquet"), "--no_progress"])
    main(
        [
            "--ckpt",
            str(ckpt),
            "--n",
            "3",
            "--option",
            "latent_scale=0.5",
            "--out",
            str(tmp_path / "y.parquet"),
            "--no_progress",
        ]
    )
    assert (tmp_path / "y.parquet").is_file() and not (tmp_path / "x.parquet").exists()


def test_sample_to_pcap_imports_back_to_the_same_flows(ckpt: Path, tmp_path: Path) -> None:
    """`--out X.pcap` writes the flows `--out X.parquet` writes (same seed) as packets, and
    `tsda data import X.pcap --label X.rules.csv` gives them back with their classes."""
    from tsda.data.capture.flows import FlowRules
    from tsda.data.capture.importer import import_captures
    from tsda.data.capture.labels import Labeller

    args = ["--ckpt", str(ckpt), "--per_class", "4", "--seed", "2", "--no_progress"]
    main([*args, "--out", str(tmp_path / "s.parquet")])
    main([*args, "--out", str(tmp_path / "s.pcap")])
    back = tmp_path / "back.parquet"
    import_captures(
        [tmp_path / "s.pcap"],
        back,
        FlowRules(idle_timeout=3600),  # generated gaps reach minutes
        Labeller(str(tmp_path / "s.rules.csv")),
        progress=False,
    )
    key = lambda r: (r["app"], r["pkts_size"], r["pkts_dir"])  # noqa: E731
    want = sorted(pq.read_table(tmp_path / "s.parquet").to_pylist(), key=key)
    got = sorted(pq.read_table(back).to_pylist(), key=key)
    assert [key(r) for r in got] == [key(r) for r in want]
    for g, w in zip(got, want):
        assert np.allclose(g["timetofirst"], np.asarray(w["timetofirst"]) - w["timetofirst"][0], atol=1e-6)
