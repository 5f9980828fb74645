"""Campaigns: every (condition, seed) of a study as an ordinary `tsda fit` run.

    tsda campaign run SPEC --out DIR [--executor local|ray|ensemble] [--workers N]
                      [--runs_per_worker R] [--members_per_job M] [--address auto]
                      [--num_cpus C] [--num_gpus G] [--conditions a,b] [--seeds 0-4]
                      [--dry_run] [extra fit overrides for every run, e.g. --data.train_fraction 0.2]
    tsda campaign report DIR [--metric test_weighted_f1] [--alpha 0.05] [--control CONDITION]
                         [--conditions a,b] [--seeds 0-3] [--complete] [--into subset]

`report` with `--conditions`, `--seeds` or `--complete` (only the seeds every selected
condition finished) reports on that selection in `DIR/<into>/` (default `subset`): a campaign
still running, or its key conditions, without touching `DIR/report.md`.

The campaign itself (spec, executors, result store, resume, report) is `tsda.campaign`;
its package docstring tells how a campaign runs and resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from jsonargparse import ArgumentParser, Namespace

from tsda.campaign import (
    CampaignSpec,
    parse_seeds,
    plan,
    read_results,
    run_campaign,
    select_runs,
    write_report,
    write_subset_report,
)
from tsda.campaign.executors import Executor
from tsda.commands.options import Applies, command_parser, pick_subcommand, refuse_inapplicable
from tsda.commands.parsing import split_known

USAGE = __doc__


def run_parser() -> ArgumentParser:
    """`run SPEC --out DIR [...]`; the options it does not know are fit overrides (`-c` too)."""
    run = command_parser(
        "tsda campaign run",
        "run (or resume) a campaign; other options are tsda fit overrides for every run",
        config=False,
    )
    run.add_argument("spec", type=str, help="campaign YAML (experiments/<study>/campaign.yaml)")
    run.add_argument("--out", type=str, required=True, help="campaign directory (results.parquet, runs/)")
    run.add_argument("--executor", type=Executor, default="local", help=", ".join(get_args(Executor)))
    run.add_argument("--workers", type=int, default=1, help="local, ensemble: concurrent processes")
    run.add_argument(
        "--runs_per_worker",
        type=int,
        default=0,
        help="local: runs a worker process runs one after another before a fresh one replaces it "
        "(0 = no limit: imports, data and compiled steps are reused; 1 = a fresh process per run)",
    )
    run.add_argument(
        "--members_per_job",
        type=int,
        default=0,
        help="ensemble: runs per process (0 = all); runs that stack train as one batched model",
    )
    run.add_argument("--address", type=str | None, default=None, help="ray: cluster address (auto, ray://host:10001)")
    run.add_argument("--num_cpus", type=float | None, default=None, help="ray: CPUs per run (default: spec)")
    run.add_argument("--num_gpus", type=float | None, default=None, help="ray: GPUs per run (default: spec)")
    run.add_argument("--conditions", type=str | None, default=None, help="comma-separated subset of conditions")
    run.add_argument("--seeds", type=str | None, default=None, help="seeds instead of the spec's: '0,3,7' or '0-29'")
    run.add_argument("--dry_run", action="store_true", help="print the runs' commands and stop")
    return run


def report_parser() -> ArgumentParser:
    """`report DIR [...]`."""
    report = command_parser("tsda campaign report", "statistics, charts and report.md of a campaign directory")
    report.add_argument("out", type=str, help="campaign directory")
    report.add_argument("--metric", type=str, default="test_weighted_f1")
    report.add_argument("--alpha", type=float, default=0.05)
    report.add_argument(
        "--control",
        type=str | None,
        default=None,
        help="condition to pair every other one with per seed (default: the spec's control)",
    )
    report.add_argument(
        "--conditions", type=str | None, default=None, help="report on these conditions only (comma-separated)"
    )
    report.add_argument("--seeds", type=str | None, default=None, help="report on these seeds only: '0,3,7' or '0-3'")
    report.add_argument("--complete", action="store_true", help="keep only the seeds every selected condition finished")
    report.add_argument("--into", type=str, default="subset", help="folder in DIR for the report of a selection")
    return report


def _selects(cfg: Namespace) -> bool:
    return bool(cfg.conditions or cfg.seeds or cfg.complete)


#: options of one executor only, and `--into` of a selection's report only
RUN_RULES = (
    Applies(("address", "num_cpus", "num_gpus"), lambda cfg: cfg.executor == "ray", "applies to --executor ray only"),
    Applies(("members_per_job",), lambda cfg: cfg.executor == "ensemble", "applies to --executor ensemble only"),
    Applies(("runs_per_worker",), lambda cfg: cfg.executor == "local", "applies to --executor local only"),
    Applies(("workers",), lambda cfg: cfg.executor != "ray", "does not apply to --executor ray (Ray schedules)"),
)
REPORT_RULES = (
    Applies(
        ("into",), _selects, "names the folder of a selection's report: it needs --conditions, --seeds or --complete"
    ),
)
PARSERS = {"run": run_parser, "report": report_parser}


def _report(args: Namespace) -> Path:
    """The whole campaign's report, or (with --conditions/--seeds/--complete) a selection's."""
    if not _selects(args):
        return write_report(args.out, args.metric, args.alpha, args.control)
    conditions = args.conditions.split(",") if args.conditions else None
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds else None
    chosen = select_runs(read_results(args.out), conditions, seeds, args.complete, args.metric)
    subset = {"conditions": conditions, "seeds": seeds, "complete": args.complete}
    return write_subset_report(args.out, chosen, args.into, subset, args.metric, args.alpha, args.control)


def _run(args: Namespace, extra: list[str]) -> None:
    """Run (or with --dry_run, print) the campaign; exits 1 when a run failed."""
    spec = CampaignSpec.from_yaml(args.spec)
    conditions = args.conditions.split(",") if args.conditions else None
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds else None
    if args.dry_run:
        for job in plan(spec, Path(args.out), extra, conditions, seeds):
            print(" ".join(["tsda fit", *job.args]))
        return
    from tsda.commands.fit import check_fit_args  # Lightning: imported only to run

    frame = run_campaign(
        spec,
        args.out,
        args.executor,
        args.workers,
        extra,
        conditions,
        seeds,
        args.address,
        args.num_cpus,
        args.num_gpus,
        check=check_fit_args,
        members_per_job=args.members_per_job,
        runs_per_worker=args.runs_per_worker,
    )
    failed = int((frame["status"] != "ok").sum())
    print(
        f"campaign {spec.name}: {len(frame) - failed} ok, {failed} failed; results: "
        f"{Path(args.out) / 'results.parquet'}",
        flush=True,
    )
    if failed:
        raise SystemExit(1)


def main(argv: list[str]) -> None:
    """`tsda campaign run|report ...`."""
    picked = pick_subcommand("campaign", argv, PARSERS, USAGE)
    if picked is None:
        return
    name, parser, rest = picked
    if name == "report":
        cfg = parser.parse_args(rest)
        refuse_inapplicable(parser, cfg, REPORT_RULES)
        print(f"report: {_report(cfg)}")
        return
    own, extra = split_known(rest, parser)
    cfg = parser.parse_args(own)
    refuse_inapplicable(parser, cfg, RUN_RULES)
    _run(cfg, extra)
