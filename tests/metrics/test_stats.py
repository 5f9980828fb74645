"""Campaign statistics: summaries, Friedman + Nemenyi, CD, plots, latent correlation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tsda.metrics import stats


def results(means: dict[str, float], n_seeds: int = 10, noise: float = 0.005, seed: int = 0) -> pd.DataFrame:
    """A fake results table: `test_weighted_f1 = mean + seed effect + noise` per (condition, seed)."""
    rng = np.random.default_rng(seed)
    seed_effect = rng.normal(0, 0.02, size=n_seeds)  # shared by all conditions of a seed (a block)
    rows = []
    for s in range(n_seeds):
        for c, m in means.items():
            f1 = m + seed_effect[s] + rng.normal(0, noise)
            rows.append(
                {
                    "condition": c,
                    "seed": s,
                    "status": "ok",
                    "test_weighted_f1": f1,
                    "test_macro_f1": f1 - 0.05,
                    "test_accuracy": f1 + 0.01,
                    "test_per_class_f1": json.dumps({"x": f1, "y": 1 - f1}),
                }
            )
    return pd.DataFrame(rows)


def test_summary_mean_ci_and_delta() -> None:
    frame = pd.DataFrame(
        {
            "condition": ["a"] * 3 + ["b"] * 3,
            "seed": [0, 1, 2] * 2,
            "status": ["ok"] * 6,
            "test_weighted_f1": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0],
        }
    )
    table = stats.summarize(frame, reference="a")
    assert list(table.index) == ["b", "a"]  # best first
    assert table.loc["a", "mean"] == pytest.approx(2.0) and table.loc["a", "std"] == pytest.approx(1.0)
    half = 4.302653 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert table.loc["a", "ci_low"] == pytest.approx(2.0 - half, rel=1e-5)
    assert table.loc["a", "ci_high"] == pytest.approx(2.0 + half, rel=1e-5)
    assert table.loc["b", "delta"] == pytest.approx(1.0) and table.loc["a", "delta"] == 0.0
    with pytest.raises(ValueError, match="reference"):
        stats.summarize(frame, reference="zzz")
    with pytest.raises(ValueError, match="metric"):
        stats.summarize(frame, metric="nope")
    assert all(math.isnan(v) for v in stats.confidence_interval([1.0]))


def test_failed_runs_do_not_count() -> None:
    frame = results({"a": 0.8, "b": 0.7}, n_seeds=3)
    frame.loc[0, ["status", "test_weighted_f1"]] = ["failed", np.nan]
    assert stats.summarize(frame).loc["a", "n"] == 2
    assert len(stats.seed_matrix(frame)) == 2  # seed 0 incomplete: not a block


def test_clearly_better_condition_ranks_first_and_friedman_is_significant() -> None:
    frame = results({"worst": 0.70, "mid": 0.75, "good": 0.80, "best": 0.85}, n_seeds=10)
    test = stats.friedman_nemenyi(frame)
    assert list(test.mean_ranks.index) == ["best", "good", "mid", "worst"]
    assert test.mean_ranks["best"] == 1.0 and test.mean_ranks["worst"] == 4.0
    assert test.pvalue < 1e-4 and test.significant
    assert test.nemenyi.loc["best", "worst"] < 0.05
    assert test.nemenyi.loc["best", "good"] > 0.05  # adjacent ranks differ by 1 < CD
    assert test.cd == pytest.approx(stats.critical_difference(4, 10))


def test_same_distribution_is_not_significant() -> None:
    frame = results({"a": 0.8, "b": 0.8, "c": 0.8, "d": 0.8}, n_seeds=10, noise=0.01, seed=1)
    test = stats.friedman_nemenyi(frame)
    assert test.pvalue > 0.05 and not test.significant
    assert (test.nemenyi.to_numpy() > 0.05).all()
    tied = results({"a": 0.8, "b": 0.8, "c": 0.8}, n_seeds=5, noise=0.0)
    tied["test_weighted_f1"] = 0.5
    assert stats.friedman_nemenyi(tied).pvalue == 1.0


def test_paired_against_the_control_removes_the_seed_effect() -> None:
    # +1 point in every seed, while seeds differ by ~2 points: only pairing sees it
    frame = results({"control": 0.80, "up": 0.81, "same": 0.80}, n_seeds=8, noise=0.002, seed=3)
    table = stats.paired_against(frame, "control")
    assert list(table.index) == ["up", "same"]  # best mean difference first; no control row
    up = table.loc["up"]
    assert up["n"] == 8 and up["wins"] == "8/8" and up["mean_diff"] == pytest.approx(0.01, abs=0.003)
    assert up["p"] < 1e-3 and up["ci_low"] > 0
    assert table.loc["same", "p"] > 0.05 and table.loc["same", "ci_low"] < 0 < table.loc["same", "ci_high"]
    from scipy.stats import ttest_ind

    unpaired = ttest_ind(
        frame[frame.condition == "up"].test_weighted_f1, frame[frame.condition == "control"].test_weighted_f1
    ).pvalue
    assert unpaired > 100 * up["p"]
    assert (table["p_holm"] >= table["p"]).all()
    # a seed the control lacks is left out of every pair
    assert (
        stats.paired_against(frame[~((frame.condition == "control") & (frame.seed == 0))], "control")["n"].eq(7).all()
    )
    with pytest.raises(ValueError, match="control condition 'nope'"):
        stats.paired_against(frame, "nope")


def test_holm_adjustment_is_step_down_and_monotone() -> None:
    adjusted = stats.holm(pd.Series({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan}))
    assert adjusted["a"] == pytest.approx(0.03) and adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06) and math.isnan(adjusted["d"])
    assert stats.holm(pd.Series({"a": 0.6, "b": 0.7}))["a"] == 1.0


def test_critical_difference_matches_demsar_table() -> None:
    # Demsar (2006), Table 5(a): q_0.05 = 2.728 for k = 5
    assert stats.critical_difference(5, 30) == pytest.approx(2.728 * math.sqrt(5 * 6 / (6 * 30)), rel=1e-3)
    with pytest.raises(ValueError, match="k >= 2"):
        stats.critical_difference(1, 5)


def test_rank_test_needs_two_seeds_and_two_conditions() -> None:
    with pytest.raises(ValueError, match="shared seeds"):
        stats.friedman_nemenyi(results({"a": 0.8, "b": 0.7}, n_seeds=1))
    two = stats.friedman_nemenyi(results({"a": 0.9, "b": 0.7}, n_seeds=6))
    assert math.isnan(two.pvalue) and list(two.mean_ranks.index) == ["a", "b"]


def test_charts_are_written(tmp_path) -> None:
    frame = results({"a": 0.7, "b": 0.8, "c": 0.9}, n_seeds=5)
    png = b"\x89PNG\r\n\x1a\n"
    assert stats.plot_cd(stats.friedman_nemenyi(frame), tmp_path / "cd.png").read_bytes()[:8] == png
    matrix = stats.per_class_matrix(frame)
    assert matrix.shape == (3, 2) and matrix.loc["c", "x"] > matrix.loc["a", "x"]
    assert stats.plot_heatmap(matrix, tmp_path / "heat.png").read_bytes()[:8] == png


def test_latent_correlation_follows_the_conditions() -> None:
    frame = results({"a": 0.7, "b": 0.75, "c": 0.8, "d": 0.85}, n_seeds=4)
    frame["latent_silhouette"] = frame["test_weighted_f1"] * 2  # monotone in F1
    frame["latent_davies_bouldin"] = -frame["test_weighted_f1"]
    corr = stats.latent_correlation(frame)
    assert corr.loc["latent_silhouette", "rho_conditions"] == pytest.approx(1.0)
    assert corr.loc["latent_davies_bouldin", "rho_conditions"] == pytest.approx(-1.0)
    assert corr.loc["latent_silhouette", "rho_runs"] == pytest.approx(1.0)
    assert list(stats.latent_table(frame).columns) == ["latent_silhouette", "latent_davies_bouldin"]


def test_markdown_table_formats_ints_and_floats() -> None:
    table = pd.DataFrame({"n": [3], "mean": [0.123456]}, index=pd.Index(["a"], name="condition"))
    assert stats.markdown_table(table).splitlines() == [
        "| condition | n | mean |",
        "|---|---|---|",
        "| a | 3 | 0.1235 |",
    ]
