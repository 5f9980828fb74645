"""Statistics of a campaign: per-condition summaries, Friedman + Nemenyi, CD chart, heatmaps.

Input is the campaign's results table (`results.parquet`, one row per run) with at least
the columns `condition`, `seed`, `status` and the metric columns (`test_weighted_f1`, ...);
only rows with `status == "ok"` count. The paper's protocol: conditions are ranked per seed
(a seed is a block; rank 1 = best), compared with a Friedman test, then a Nemenyi post-hoc
test, drawn as a critical-difference (CD) chart (Demsar 2006). The tests come from scipy and
scikit-posthocs; the critical difference is `q_alpha * sqrt(k (k + 1) / (6 N))` with
`q_alpha` from scipy's studentized range distribution.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsda.figures import pyplot, save_figure
from tsda.metrics.latent import LATENT_KEYS

SCORES = ("test_weighted_f1", "test_macro_f1", "test_accuracy")


def ok_runs(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of finished runs (`status == 'ok'`)."""
    if "status" not in results:
        return results
    return results[results["status"] == "ok"]


def confidence_interval(values: np.ndarray | pd.Series, level: float = 0.95) -> tuple[float, float]:
    """Two-sided `level` confidence interval of the mean (Student's t); NaN for fewer than 2 values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = values.mean(), stats.sem(values)
    if sem == 0:
        return float(mean), float(mean)
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def summarize(
    results: pd.DataFrame, metric: str = "test_weighted_f1", reference: str | None = None, level: float = 0.95
) -> pd.DataFrame:
    """Per condition: `n`, `mean`, `std`, `ci_low`, `ci_high` of `metric`, and `delta` (mean
    minus the reference condition's mean; NaN without a reference). Sorted by mean, best first.
    """
    runs = ok_runs(results)
    if metric not in runs:
        raise ValueError(f"metric {metric!r} is not a column of the results")
    rows = {}
    for condition, group in runs.groupby("condition", sort=False):
        values = group[metric].astype(float)
        low, high = confidence_interval(values.to_numpy(), level)
        rows[condition] = {
            "n": int(values.notna().sum()),
            "mean": values.mean(),
            "std": values.std(ddof=1),
            "ci_low": low,
            "ci_high": high,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "condition"
    if reference is not None and reference not in table.index:
        raise ValueError(f"reference condition {reference!r} has no finished run")
    table["delta"] = table["mean"] - table.loc[reference, "mean"] if reference is not None else math.nan
    return table.sort_values("mean", ascending=False)


def per_seed(results: pd.DataFrame, metric: str = "test_weighted_f1") -> pd.DataFrame:
    """`(seeds, conditions)` table of `metric` over finished runs; NaN where a run is missing."""
    return ok_runs(results).pivot_table(index="seed", columns="condition", values=metric, aggfunc="mean")


def seed_matrix(results: pd.DataFrame, metric: str = "test_weighted_f1") -> pd.DataFrame:
    """`(seeds, conditions)` table of `metric`, keeping only seeds every condition finished."""
    return per_seed(results, metric).dropna(axis=0, how="any")


def holm(pvalues: pd.Series) -> pd.Series:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1; NaN stays NaN)."""
    valid = pvalues.dropna().sort_values()
    m = len(valid)
    adjusted = (valid * np.arange(m, 0, -1)).cummax().clip(upper=1.0)
    return adjusted.reindex(pvalues.index)


def paired_against(results: pd.DataFrame, control: str, metric: str = "test_weighted_f1") -> pd.DataFrame:
    """Every other condition minus `control`, paired by seed (same seed = same split, same
    weight initialisation where the architectures match, same batch-order seed).

    Columns per condition: `n` (seeds both finished), `mean_diff`, `std_diff`, `ci_low`,
    `ci_high` (95 % t-interval of the mean difference), `wins` (seeds where the condition
    beats the control), `p` (two-sided paired t-test) and `p_holm` (Holm-adjusted over the
    conditions of the table). Sorted by `mean_diff`, best first. Pairing removes the seed
    effect that an unpaired comparison counts as noise; with 5 seeds a Wilcoxon test cannot
    go below p = 0.0625, hence the t-test.
    """
    from scipy.stats import ttest_rel

    matrix = per_seed(results, metric)
    if control not in matrix:
        raise ValueError(f"control condition {control!r} has no finished run")
    rows = {}
    for condition in matrix.columns.drop(control):
        pair = matrix[[condition, control]].dropna()
        diff = (pair[condition] - pair[control]).to_numpy(dtype=float)
        low, high = confidence_interval(diff)
        p = float(ttest_rel(pair[condition], pair[control]).pvalue) if len(diff) >= 2 and diff.std() > 0 else math.nan
        rows[condition] = {
            "n": len(diff),
            "mean_diff": diff.mean() if len(diff) else math.nan,
            "std_diff": diff.std(ddof=1) if len(diff) >= 2 else math.nan,
            "ci_low": low,
            "ci_high": high,
            "wins": f"{int((diff > 0).sum())}/{len(diff)}",
            "p": p,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    if table.empty:
        return table
    table.index.name = "condition"
    table["p_holm"] = holm(table["p"])
    return table.sort_values("mean_diff", ascending=False)


@dataclass
class RankTest:
    """Friedman test over seeds (blocks) and conditions, with the Nemenyi post-hoc.

    Attributes:
        mean_ranks: per condition, its rank averaged over seeds (1 = best), ascending.
        statistic, pvalue: Friedman chi-square statistic and p-value (NaN for < 3 conditions).
        nemenyi: `(k, k)` Nemenyi p-values between conditions.
        cd: critical difference of mean ranks at `alpha`.
        n_blocks: seeds used (those every condition finished); k: conditions.
    """

    mean_ranks: pd.Series
    statistic: float
    pvalue: float
    nemenyi: pd.DataFrame
    cd: float
    n_blocks: int
    k: int
    alpha: float

    @property
    def significant(self) -> bool:
        return bool(self.pvalue < self.alpha)


def critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks: `q_alpha * sqrt(k (k + 1) / (6 N))`."""
    from scipy.stats import studentized_range

    if k < 2 or n_blocks < 1:
        raise ValueError(f"critical difference needs k >= 2 and n_blocks >= 1, got k={k}, n_blocks={n_blocks}")
    q_alpha = studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q_alpha * math.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def friedman_nemenyi(results: pd.DataFrame, metric: str = "test_weighted_f1", alpha: float = 0.05) -> RankTest:
    """Rank conditions per seed (higher `metric` = better = rank 1) and test the differences."""
    import scikit_posthocs as sp
    from scipy.stats import friedmanchisquare

    matrix = seed_matrix(results, metric)  # (N, k)
    n, k = matrix.shape
    if k < 2 or n < 2:
        raise ValueError(f"a rank test needs >= 2 conditions and >= 2 shared seeds, got {k} and {n}")
    ranks = matrix.rank(axis=1, ascending=False).mean(axis=0).sort_values()
    statistic, pvalue = math.nan, math.nan
    if k >= 3:
        with warnings.catch_warnings():  # every block tied: scipy divides by zero
            warnings.simplefilter("ignore", RuntimeWarning)
            statistic, pvalue = (float(v) for v in friedmanchisquare(*(matrix[c].to_numpy() for c in matrix)))
        if math.isnan(statistic):  # every block tied: no difference at all
            statistic, pvalue = 0.0, 1.0
    # scikit-posthocs ranks ascending (rank 1 = smallest), so negate: the best gets rank 1
    nemenyi = sp.posthoc_nemenyi_friedman(-matrix.to_numpy())
    nemenyi.index = nemenyi.columns = list(matrix.columns)
    nemenyi = nemenyi.fillna(1.0)
    return RankTest(ranks, statistic, pvalue, nemenyi, critical_difference(k, n, alpha), n, k, alpha)


def plot_cd(test: RankTest, path: str | Path, title: str | None = None) -> Path:
    """Critical-difference chart (scikit-posthocs' `critical_difference_diagram`) as a PNG."""
    import scikit_posthocs as sp

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.3 * test.k))
    sp.critical_difference_diagram(test.mean_ranks, test.nemenyi, cd=test.cd, alpha=test.alpha, ax=ax)
    p = "n/a" if math.isnan(test.pvalue) else f"{test.pvalue:.2g}"
    ax.set_title(
        title or f"mean rank over {test.n_blocks} seeds (Friedman p = {p}, CD = {test.cd:.2f})", fontsize=9, pad=28
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def per_class_matrix(results: pd.DataFrame, column: str = "test_per_class_f1") -> pd.DataFrame:
    """`(conditions, classes)` mean per-class F1; the column holds a dict or its JSON per run."""
    runs = ok_runs(results)
    rows = []
    for condition, value in zip(runs["condition"], runs[column]):
        scores = json.loads(value) if isinstance(value, str) else dict(value or {})
        rows.append({"condition": condition, **scores})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby("condition", sort=False).mean()


def plot_heatmap(matrix: pd.DataFrame, path: str | Path, title: str = "mean per-class F1") -> Path:
    """Heatmap PNG of a `(rows, columns)` table of values in [0, 1] (e.g. per-class F1)."""
    plt = pyplot()
    rows, cols = matrix.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * cols + 3), max(2.5, 0.3 * rows + 1.5)))
    image = ax.imshow(matrix.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(cols), [str(c) for c in matrix.columns], rotation=90, fontsize=6)
    ax.set_yticks(range(rows), [str(r) for r in matrix.index], fontsize=7)
    ax.set_title(title, fontsize=9)
    if rows * cols <= 400:
        for (i, j), v in np.ndenumerate(matrix.to_numpy(dtype=float)):
            ax.text(
                j,
                i,
                "" if math.isnan(v) else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if v < 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def latent_columns(results: pd.DataFrame) -> list[str]:
    """The `latent_*` metric columns present in the results."""
    return [f"latent_{k}" for k in LATENT_KEYS if f"latent_{k}" in results]


def latent_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per condition, the mean of each latent metric."""
    runs = ok_runs(results)
    cols = latent_columns(runs)
    return runs.groupby("condition", sort=False)[cols].mean() if cols else pd.DataFrame()


def latent_correlation(results: pd.DataFrame, metric: str = "test_weighted_f1") -> pd.DataFrame:
    """Spearman correlation between each latent metric and `metric`.

    Columns: `rho_conditions`, `p_conditions` (over per-condition means: do conditions that
    separate classes better score better?) and `rho_runs`, `p_runs` (over single runs).
    NaN where fewer than 3 points exist or a series is constant.
    """
    from scipy.stats import spearmanr

    runs = ok_runs(results)
    means = runs.groupby("condition", sort=False)[[metric, *latent_columns(runs)]].mean()
    rows = {}
    for col in latent_columns(runs):
        row = {}
        for scope, frame in (("conditions", means), ("runs", runs)):
            pair = frame[[col, metric]].astype(float).dropna()
            ok = len(pair) >= 3 and pair[col].nunique() > 1 and pair[metric].nunique() > 1
            rho, p = spearmanr(pair[col], pair[metric]) if ok else (math.nan, math.nan)
            row[f"rho_{scope}"], row[f"p_{scope}"] = float(rho), float(p)
        rows[col] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "latent metric"
    return table


def markdown_table(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-markdown table of `table` (index as the first column)."""

    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    header = [table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.itertuples(name=None):  # keeps each column's dtype (ints stay ints)
        lines.append("| " + " | ".join([str(row[0]), *(cell(v) for v in row[1:])]) + " |")
    return "\n".join(lines)
