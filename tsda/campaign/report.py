"""A campaign's report: `DIR/report.md` from `DIR/results.parquet` (and `DIR/campaign.json`):
per-score summary tables, Friedman/Nemenyi ranks with the critical-difference chart, paired
differences against the control condition, the per-class F1 heatmap, latent-space geometry
and the failed runs; the same tables and charts logged to W&B as the campaign's summary run
(`tsda.logging.log_summary_run`). `read_results`, `select_runs` + `write_subset_report`: the same report of
some conditions and seeds (a campaign still running, the key conditions) in a subfolder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tsda.runs import atomic_path


@dataclass
class Sections:
    """The report under construction: markdown `lines`, the `tables` (frames indexed by
    condition) and `images` (PNG paths in the campaign directory) that go to W&B."""

    lines: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)


def _header(
    report: Sections, info: dict[str, Any], name: str, results: pd.DataFrame, runs: pd.DataFrame, reference: str | None
) -> None:
    """Title, description and one paragraph of counts, seeds, base config and overrides."""
    report.lines += [f"# Campaign `{name}`", ""]
    if info.get("description"):
        report.lines += [info["description"].strip(), ""]
    failed = results[results["status"] != "ok"]
    if info.get("subset"):
        sub = info["subset"]
        report.lines += [
            (
                f"A subset of campaign `{sub['of']}`: conditions "
                f"{sub.get('conditions') or 'all'}, seeds {sub.get('seeds') or 'all'}"
                f"{'; only seeds every selected condition finished' if sub.get('complete') else ''}"
                f"{'; with ' + sub['with'] if sub.get('with') else ''}."
            ),
            "",
        ]
    report.lines += [
        (
            f"{len(runs)} finished run(s), {len(failed)} failed; {runs['condition'].nunique()} condition(s), "
            f"seeds {sorted(int(s) for s in runs['seed'].unique())}; reference: `{reference}`."
        ),
        (
            f"Base config `{info.get('base', '?')}`; overrides for every run: "
            f"`{' '.join(info.get('overrides', []) + info.get('extra', [])) or 'none'}`."
        ),
        "",
    ]


def _scores(report: Sections, results: pd.DataFrame, runs: pd.DataFrame, metric: str, reference: str | None) -> None:
    """One table per score of `stats.SCORES` present (mean, std, t-interval, delta); the
    `metric` table also holds the mean run seconds."""
    from tsda.metrics import stats

    for score in stats.SCORES:
        if score in runs:
            table = stats.summarize(results, score, reference)
            if score == metric and "seconds" in runs:
                table["seconds"] = runs.groupby("condition")["seconds"].mean()
            report.tables[score] = table
            report.lines += [
                f"## {score} (mean, std, 95% t-interval, delta vs `{reference}`)",
                "",
                stats.markdown_table(table),
                "",
            ]


def _ranks(
    report: Sections, results: pd.DataFrame, out: Path, metric: str, alpha: float, reference: str | None
) -> None:
    """Friedman test and Nemenyi mean ranks of `metric` over the seeds, with `cd_<metric>.png`."""
    from tsda.metrics import stats

    try:
        test = stats.friedman_nemenyi(results, metric, alpha)
    except ValueError as err:
        report.lines += ["## Ranks", "", f"No rank test: {err}.", ""]
        return
    report.images["cd_chart"] = stats.plot_cd(test, out / f"cd_{metric}.png")
    if test.pvalue != test.pvalue:  # NaN: fewer than 3 conditions
        friedman = "Friedman test: needs at least 3 conditions."
    else:
        verdict = "the conditions differ significantly" if test.significant else "no significant difference"
        friedman = f"Friedman chi2 = {test.statistic:.3f}, p = {test.pvalue:.3g}: {verdict} (alpha = {alpha})."
    ranks = test.mean_ranks.to_frame("mean rank")
    if reference is not None:
        ranks[f"Nemenyi p vs {reference}"] = test.nemenyi[reference]
    report.tables["ranks"] = ranks
    report.lines += [
        f"## Ranks of {metric} over {test.n_blocks} seeds",
        "",
        (
            f"{friedman} Nemenyi critical difference of mean ranks: CD = {test.cd:.3f} (k = {test.k}); "
            "conditions joined by a bar are not significantly different."
        ),
        "",
        f"![critical difference chart]({report.images['cd_chart'].name})",
        "",
        stats.markdown_table(ranks, 3),
        "",
    ]


def _paired(report: Sections, results: pd.DataFrame, metric: str, control: str | None) -> None:
    """Every condition minus the control, paired by seed (`stats.paired_against`)."""
    from tsda.metrics import stats

    if control is None:
        return
    table = stats.paired_against(results, control, metric)
    if table.empty:
        return
    report.tables["paired"] = table
    report.lines += [
        f"## {metric} paired against the control `{control}`",
        "",
        (
            "Per seed, condition minus control: mean difference with its 95% t-interval, seeds won, "
            "two-sided paired t-test p and Holm-adjusted p over the conditions below."
        ),
        "",
        stats.markdown_table(table),
        "",
    ]


def _per_class(report: Sections, results: pd.DataFrame, runs: pd.DataFrame, out: Path) -> None:
    """The (condition x class) mean F1 heatmap `per_class_f1.png`, when runs recorded it."""
    from tsda.metrics import stats

    per_class = stats.per_class_matrix(results) if "test_per_class_f1" in runs else pd.DataFrame()
    if not per_class.empty:
        report.images["per_class_f1"] = stats.plot_heatmap(per_class, out / "per_class_f1.png")
        report.lines += [
            "## Per-class F1 (mean over seeds)",
            "",
            f"![per-class F1]({report.images['per_class_f1'].name})",
            "",
        ]


def _latent(report: Sections, results: pd.DataFrame, metric: str) -> None:
    """Latent geometry of the test split per condition and its Spearman correlation with `metric`."""
    from tsda.metrics import stats

    latent = stats.latent_table(results)
    if latent.empty:
        return
    corr = stats.latent_correlation(results, metric)
    report.tables["latent"], report.tables["latent_correlation"] = latent, corr
    report.lines += [
        "## Latent-space geometry of the test split (mean over seeds)",
        "",
        (
            "silhouette, calinski_harabasz, margin: higher = classes better separated; "
            "davies_bouldin, spread: lower = better (see `tsda.metrics.latent`)."
        ),
        "",
        stats.markdown_table(latent),
        "",
        f"Spearman correlation with {metric} (over condition means and over single runs):",
        "",
        stats.markdown_table(corr, 3),
        "",
    ]


def _failures(report: Sections, results: pd.DataFrame) -> None:
    """One line per failed run: condition, seed and the end of its error."""
    failed = results[results["status"] != "ok"]
    if len(failed):
        report.lines += (
            ["## Failed runs", ""]
            + [
                f"- `{c}` seed {s}: {str(e)[-300:]!r}"
                for c, s, e in zip(failed["condition"], failed["seed"], failed["error"])
            ]
            + [""]
        )


def read_results(out: str | Path) -> pd.DataFrame:
    """`out/results.parquet`; a `ValueError` naming the folder where there is none."""
    path = Path(out) / "results.parquet"
    if not path.is_file():
        raise ValueError(f"campaign report: no results.parquet in {out}")
    return pd.read_parquet(path)


def write_report(
    out: str | Path, metric: str = "test_weighted_f1", alpha: float = 0.05, control: str | None = None
) -> Path:
    """`out/report.md` with the summary tables, CD chart, paired differences against the
    control (`control`, else the spec's `control`, if any), per-class heatmap and latent
    geometry; the same tables and charts logged to W&B as the campaign's summary run."""
    from tsda.logging import log_summary_run
    from tsda.metrics import stats

    out = Path(out)
    results = read_results(out)
    info = json.loads((out / "campaign.json").read_text()) if (out / "campaign.json").is_file() else {}
    runs = stats.ok_runs(results)
    if runs.empty:
        raise ValueError(f"campaign report: no finished run in {out}")
    name = info.get("name", out.name)
    reference = info.get("reference")
    if reference not in set(runs["condition"]):
        reference = None
    control = control or info.get("control")
    if control is not None and control not in set(runs["condition"]):
        raise ValueError(f"campaign report: control {control!r} has no finished run in {out}")
    report = Sections()
    _header(report, info, name, results, runs, reference)
    _scores(report, results, runs, metric, reference)
    _ranks(report, results, out, metric, alpha, reference)
    _paired(report, results, metric, control)
    _per_class(report, results, runs, out)
    _latent(report, results, metric)
    _failures(report, results)
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(report.lines))
    log_summary_run(
        "auto",
        info.get("wandb_project", "tsda"),
        f"{name}-report",
        out,
        group=name,
        job_type="report",
        tags=["report"],
        tables={f"table/{k}": t for k, t in report.tables.items()},
        images={f"chart/{k}": p for k, p in report.images.items()},
    )
    return path


def select_runs(
    results: pd.DataFrame,
    conditions: list[str] | None = None,
    seeds: list[int] | None = None,
    complete: bool = False,
    metric: str = "test_weighted_f1",
) -> pd.DataFrame:
    """The rows of `conditions` (all if None) and `seeds` (all if None); with `complete`,
    only the seeds every selected condition finished (the paired, Friedman-ready block).
    Unknown conditions and an empty selection are `ValueError`s naming the flag."""
    from tsda.metrics import stats

    if conditions is not None:
        unknown = sorted(set(conditions) - set(results["condition"]))
        if unknown:
            raise ValueError(
                f"--conditions: unknown condition(s) {unknown}; the campaign has {sorted(set(results['condition']))}"
            )
        results = results[results["condition"].isin(conditions)]
    if seeds is not None:
        results = results[results["seed"].isin(seeds)]
    if complete:
        results = results[results["seed"].isin(stats.seed_matrix(results, metric).index)]
    if stats.ok_runs(results).empty:
        raise ValueError(f"--seeds/--conditions: no finished run selected (seeds {seeds}, conditions {conditions})")
    return results


def write_subset_report(
    out: str | Path,
    results: pd.DataFrame,
    into: str,
    subset: dict[str, Any],
    metric: str = "test_weighted_f1",
    alpha: float = 0.05,
    control: str | None = None,
    **info: Any,
) -> Path:
    """The report of `results` (a selection of campaign `out`'s runs, see `select_runs`, or
    their union with another campaign's) in `out/into/`: its own results.parquet, the
    campaign's campaign.json with `subset` (what was selected, shown in the header) and any
    `info` overrides (e.g. `reference`), report.md, charts and W&B summary run
    (`<name>-<into>`). `into` is a relative folder inside `out`, not under `runs/`."""
    out = Path(out)
    parts = Path(into).parts
    if not parts or Path(into).is_absolute() or ".." in parts or parts[0] == "runs":
        raise ValueError(f"--into: {into!r} must be a relative folder inside the campaign directory, not under runs/")
    campaign = json.loads((out / "campaign.json").read_text()) if (out / "campaign.json").is_file() else {}
    name = f"{campaign.get('name', out.name)}-{into.replace('/', '-')}"
    target = out / into
    target.mkdir(parents=True, exist_ok=True)
    with atomic_path(target / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    meta = {**campaign, **info, "name": name, "subset": {"of": str(out), **subset}}
    if control is not None:
        meta["control"] = control
    elif meta.get("control") not in set(results["condition"]):
        meta.pop("control", None)  # the spec's control was not selected: no paired section
    with atomic_path(target / "campaign.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return write_report(target, metric, alpha)
