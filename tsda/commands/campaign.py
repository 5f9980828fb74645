"""Campaigns: every (condition, seed) of a study as an ordinary `tsda fit` run.

    tsda campaign run SPEC --out DIR [--executor local|ray|ensemble] [--workers N]
                      [--members_per_job M] [--address auto]
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

import argparse
import sys
from pathlib import Path

from tsda.campaign import (
    EXECUTORS,
    CampaignSpec,
    parse_seeds,
    plan,
    read_results,
    run_campaign,
    select_runs,
    write_report,
    write_subset_report,
)

USAGE = __doc__


def _parser() -> argparse.ArgumentParser:
    """`run SPEC --out DIR [...]` and `report DIR [...]`; unknown `run` options are fit overrides."""
    parser = argparse.ArgumentParser(prog="tsda campaign", description="conditions x seeds studies")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) a campaign")
    run.add_argument("spec", help="campaign YAML (experiments/<study>/campaign.yaml)")
    run.add_argument("--out", required=True, help="campaign directory (results.parquet, runs/)")
    run.add_argument("--executor", choices=list(EXECUTORS), default="local")
    run.add_argument("--workers", type=int, default=1, help="local, ensemble: concurrent processes")
    run.add_argument(
        "--members_per_job",
        type=int,
        default=0,
        help="ensemble: runs per process (0 = all); runs that stack train as one batched model",
    )
    run.add_argument("--address", default=None, help="ray: cluster address (auto, ray://host:10001)")
    run.add_argument("--num_cpus", type=float, default=None, help="ray: CPUs per run (default: spec)")
    run.add_argument("--num_gpus", type=float, default=None, help="ray: GPUs per run (default: spec)")
    run.add_argument("--conditions", default=None, help="comma-separated subset of conditions")
    run.add_argument("--seeds", default=None, help="seeds instead of the spec's: '0,3,7' or '0-29'")
    run.add_argument("--dry_run", action="store_true", help="print the runs' commands and stop")
    report = sub.add_parser("report", help="statistics, charts and report.md of a campaign directory")
    report.add_argument("out", help="campaign directory")
    report.add_argument("--metric", default="test_weighted_f1")
    report.add_argument("--alpha", type=float, default=0.05)
    report.add_argument(
        "--control", default=None, help="condition to pair every other one with per seed (default: the spec's control)"
    )
    report.add_argument("--conditions", default=None, help="report on these conditions only (comma-separated)")
    report.add_argument("--seeds", default=None, help="report on these seeds only: '0,3,7' or '0-3'")
    report.add_argument("--complete", action="store_true", help="keep only the seeds every selected condition finished")
    report.add_argument("--into", default="subset", help="folder in DIR for the report of a selection")
    return parser


def _report(args: argparse.Namespace) -> Path:
    """The whole campaign's report, or (with --conditions/--seeds/--complete) a selection's."""
    if not (args.conditions or args.seeds or args.complete):
        return write_report(args.out, args.metric, args.alpha, args.control)
    conditions = args.conditions.split(",") if args.conditions else None
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds else None
    chosen = select_runs(read_results(args.out), conditions, seeds, args.complete, args.metric)
    subset = {"conditions": conditions, "seeds": seeds, "complete": args.complete}
    return write_subset_report(args.out, chosen, args.into, subset, args.metric, args.alpha, args.control)


def main(argv: list[str] | None = None) -> None:
    """`tsda campaign run|report ...`; exits 1 when a run failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    args, extra = _parser().parse_known_args(argv)
    if args.command == "report":
        if extra:
            raise ValueError(f"campaign report: unknown arguments {extra}")
        print(f"report: {_report(args)}")
        return
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
    )
    failed = int((frame["status"] != "ok").sum())
    print(
        f"campaign {spec.name}: {len(frame) - failed} ok, {failed} failed; results: "
        f"{Path(args.out) / 'results.parquet'}",
        flush=True,
    )
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
