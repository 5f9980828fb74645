"""Fidelity metrics: sanity on identical / shifted sets, TSTR vs shuffled labels,
memorisation, and `tsda evaluate` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.tiny import N_PACKETS, class_table, datamodule, fit_classifier

from tsda.commands.evaluate import main
from tsda.commands.tstr import TstrSettings, train_and_test
from tsda.data.codec import FlowCodec
from tsda.data.sources import write_parquet
from tsda.metrics.discriminative import discriminative_score
from tsda.metrics.distances import frechet_distance, memorisation, prdc
from tsda.metrics.fidelity import FEATURES, marginal_distances, size_curve_distance

CODEC = FlowCodec(n_packets=N_PACKETS)
NAMES = ("small_up", "big_down", "mixed")
REAL_OPTIONS = ["--data.min_packets", "3", "--data.min_class_size", "5", "--data.n_packets", str(N_PACKETS)]


def shifted(table):  # larger packets, longer gaps, every flow cut to 6 packets
    out = table.take(np.arange(len(table)))
    out.sizes = np.clip(out.sizes * 1.6, 0, 1460)
    out.times = out.times * 20
    return out.truncate(6)


def test_identical_sets_have_zero_distance() -> None:
    batch = CODEC.encode(class_table(40))
    d = marginal_distances(batch, batch, NAMES)
    for feature in FEATURES:
        assert d["overall"][feature] == {"w1": 0.0, "js": 0.0}
        assert d["mean_per_class"][feature] == {"w1": 0.0, "js": 0.0}
    assert set(d["per_class"]) == set(NAMES)
    assert size_curve_distance(batch, batch, NAMES)["mean_abs_diff"] == 0.0


def test_distances_grow_with_a_shift() -> None:
    real = CODEC.encode(class_table(40))
    fresh = CODEC.encode(class_table(40, seed=9))
    moved = CODEC.encode(shifted(class_table(40, seed=9)))
    near, far = marginal_distances(real, fresh, NAMES), marginal_distances(real, moved, NAMES)
    for feature in FEATURES:
        assert far["overall"][feature]["w1"] > near["overall"][feature]["w1"]
        assert far["overall"][feature]["js"] > near["overall"][feature]["js"]
        assert 0 <= far["overall"][feature]["js"] <= 1
    assert discriminative_score(real, fresh)["score"] < 0.2
    assert discriminative_score(real, moved)["score"] > 0.4


def test_latent_set_distances() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) < frechet_distance(a, b + 2.0)
    same, off = prdc(a, b), prdc(a, b + 3.0)
    assert min(same.values()) > 0.6
    assert off["precision"] < 0.2 and off["coverage"] < 0.2 and same["coverage"] > off["coverage"]


def test_memorisation_spots_copies() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(200, 3)), rng.normal(size=(100, 3))
    copies = memorisation(train, test, train[:50])
    assert copies["share_exact_copies"] == 1.0 and copies["ratio"] == 0.0
    fresh = memorisation(train, test, rng.normal(size=(100, 3)))
    assert fresh["share_exact_copies"] == 0.0 and 0.6 < fresh["ratio"] < 1.6
    assert fresh["share_below_p5"] < 0.2


def test_tstr_drops_when_training_labels_are_shuffled() -> None:
    train, val, test = class_table(40, seed=1), class_table(10, seed=5), class_table(20, seed=2)
    settings = TstrSettings(
        seeds=1,
        max_epochs=6,
        patience=2,
        batch_size=16,
        accelerator="cpu",
        model_kwargs={"backbone_kwargs": {"width": 8}, "lr": 0.01},
    )
    good = train_and_test(train, val, test, CODEC, 0, settings)
    shuffled = train.take(np.arange(len(train)))
    shuffled.labels = np.random.default_rng(0).permutation(shuffled.labels)
    bad = train_and_test(shuffled, val, test, CODEC, 0, settings)
    assert good["weighted_f1"] > 0.8
    assert bad["weighted_f1"] < good["weighted_f1"] - 0.3
    assert 1 <= good["epochs"] <= 6 and 0 <= good["best_epoch"] < good["epochs"]
    assert train_and_test(train, val, test, CODEC, 0, settings)["weighted_f1"] == good["weighted_f1"]  # seeded


def test_tsda_evaluate_writes_fidelity_json_plots_and_a_wandb_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # the suite runs disabled; this test reads the run back
    monkeypatch.setenv("WANDB_SILENT", "true")
    dm = datamodule()
    clf = fit_classifier(tmp_path, dm, epochs=1)
    real = write_parquet(class_table(80, seed=3), tmp_path / "real.parquet")
    synthetic = write_parquet(shifted(class_table(30, seed=4)), tmp_path / "syn.parquet")
    out = tmp_path / "fid"
    main(
        [
            "--data.path",
            str(real),
            "--synthetic",
            str(synthetic),
            "--classifier",
            str(clf),
            "--out",
            str(out),
            "--tstr_seeds",
            "2",
            "--tstr_max_epochs",
            "2",
            "--tstr_patience",
            "1",
            "--accelerator",
            "cpu",
            "--tstr_model",
            "{backbone_kwargs: {width: 8}}",
            "--max_flows",
            "150",
            *REAL_OPTIONS,
        ]
    )
    result = json.loads((out / "fidelity.json").read_text())
    assert result["n_flows"]["synthetic"] == 90 and result["n_flows"]["real_test"] <= 150
    assert result["marginals"]["overall"]["size"]["w1"] > 0
    t = result["tstr"]
    assert {"tstr", "trtr", "ratio", "real_plus_synthetic"} <= set(t)
    for part in ("tstr", "trtr", "real_plus_synthetic"):
        assert [r["seed"] for r in t[part]["seeds"]] == [0, 1]
        assert all(1 <= r["epochs"] <= 2 for r in t[part]["seeds"])
        scores = [r["weighted_f1"] for r in t[part]["seeds"]]
        assert t[part]["mean"]["weighted_f1"] == pytest.approx(np.mean(scores))
    assert t["ratio"] == pytest.approx(t["tstr"]["mean"]["weighted_f1"] / t["trtr"]["mean"]["weighted_f1"])
    assert t["tstr"]["n_train"] == 90 and t["real_plus_synthetic"]["n_train"] == 90 + t["trtr"]["n_train"]
    assert {"frechet", "precision", "recall", "density", "coverage", "memorisation"} <= set(result["latent"])
    assert 0 <= result["discriminative"]["score"] <= 0.5
    gru = result["discriminative_gru"]
    assert 0 <= gru["score"] <= 0.5 and gru["score"] == pytest.approx(abs(gru["accuracy"] - 0.5)) and gru["epochs"] >= 1
    giveaways = result["discriminative_by_feature"]
    assert len(giveaways["size"]) == N_PACKETS and giveaways["top"][0]["score"] == max(
        [
            giveaways["length"],
            giveaways["direction_share"],
            *giveaways["size"],
            *giveaways["direction"],
            *giveaways["iat"],
        ]
    )
    for png in ("marginals.png", "size_curves.png", "latent_tsne.png", "example_flows.png"):
        assert (out / png).stat().st_size > 1000
    from support.wandb import offline_summary

    run_dir, summary = offline_summary(out / "wandb")
    assert summary["tstr/ratio"] == pytest.approx(t["ratio"])
    assert summary["discriminative_gru/score"] == pytest.approx(gru["score"])
    assert summary["per_class_marginals/_type"] == "table-file"
    assert list(run_dir.glob("files/media/images/marginals_*.png"))


def test_feature_giveaways_name_the_feature_that_differs() -> None:
    from tsda.metrics.discriminative import feature_giveaways

    real = CODEC.encode(class_table(200))
    assert feature_giveaways(real, CODEC.encode(class_table(200, seed=3)))["top"][0]["score"] < 0.15
    cut = feature_giveaways(real, CODEC.encode(class_table(200, seed=3).truncate(6)))  # every flow 6 packets
    assert cut["length"] > 0.4 and cut["top"][0]["feature"] in ("length", "size[6]", "direction[6]", "iat[6]")
    assert max(cut["size"][:6]) < 0.15  # the first packets themselves are alike


def test_evaluate_compares_several_generators_against_one_trtr(tmp_path: Path) -> None:
    real = write_parquet(class_table(200, seed=3), tmp_path / "real.parquet")  # a test split of 60 flows
    near = write_parquet(class_table(40, seed=4), tmp_path / "near.parquet")
    far = write_parquet(shifted(class_table(40, seed=4)), tmp_path / "far.parquet")
    out = tmp_path / "cmp"
    main(
        [
            "--data.path",
            str(real),
            "--synthetic",
            str(near),
            str(far),
            "--names",
            "near",
            "far",
            "--out",
            str(out),
            "--tstr_seeds",
            "1",
            "--tstr_max_epochs",
            "2",
            "--tstr_patience",
            "1",
            "--accelerator",
            "cpu",
            "--tstr_model",
            "{backbone_kwargs: {width: 8}}",
            "--gru",
            "false",
            "--real_plus_synthetic",
            "false",
            *REAL_OPTIONS,
        ]
    )
    results = {n: json.loads((out / n / "fidelity.json").read_text()) for n in ("near", "far")}
    assert results["near"]["tstr"]["trtr"] == results["far"]["tstr"]["trtr"]  # trained once, shared
    assert "real_plus_synthetic" not in results["near"]["tstr"] and "discriminative_gru" not in results["near"]
    rows = {r["generator"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert rows["far"]["discriminative"] > rows["near"]["discriminative"]
    assert "| near |" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="--names"):
        main(["--data.path", str(real), "--synthetic", str(near), str(far), "--names", "x", "--out", str(out)])


def test_evaluate_rejects_a_classifier_of_other_classes(tmp_path: Path) -> None:
    dm = datamodule()
    clf = fit_classifier(tmp_path, dm, epochs=1)
    other = class_table(80, seed=3)
    other.class_names = ("x", "y", "z")
    real = write_parquet(other, tmp_path / "real.parquet")
    syn = write_parquet(other, tmp_path / "syn.parquet")
    with pytest.raises(ValueError, match="classifier"):
        main(
            [
                "--data.path",
                str(real),
                "--synthetic",
                str(syn),
                "--classifier",
                str(clf),
                "--out",
                str(tmp_path / "o"),
                "--tstr_seeds",
                "0",
                *REAL_OPTIONS,
            ]
        )
