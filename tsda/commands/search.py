"""`tsda augment search`: a TrivialAugment policy (ops, weights, a magnitude range each,
rounds n) searched with Optuna by the validation weighted F1 of short `tsda fit` runs.

    tsda augment search -c experiments/handcrafted/base.yaml --space configs/search/policy_space.yaml \\
        --out runs/search --trials 16 --workers 2 [--seed 0] [--epochs 8] [--data.train_fraction 0.1 ...]
    tsda fit -c experiments/handcrafted/base.yaml --model.init_args.augmentation runs/search/policy.yaml

`-c` is the `tsda fit` config every trial starts from; any other option (`--data.*`,
`--trainer.*`, `--model.init_args.*`) is a `tsda fit` override passed to every trial. Each
trial is a `tsda fit` process into `OUT/trials/<number>/run/` with `--trainer.max_epochs
EPOCHS --seed_everything SEED --test_after_fit false` (the test split is never read); an
override of what the search sets itself (`SET_BY_THE_SEARCH`) is refused.
Rerunning the same command resumes (`OUT/study.db`; `--trials` is the total wanted).
Writes `OUT/policy.yaml` (the best trial's policy) and `OUT/search.json` (trial table,
cost: trials, wall and CPU seconds); the trial table also goes to W&B. `--space` (default:
the values of `configs/search/policy_space.yaml`) is described in `tsda.campaign.space`;
how the search runs and resumes in `tsda.campaign.search`.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from tsda.commands.options import command_parser
from tsda.commands.parsing import split_known
from tsda.errors import TsdaError
from tsda.logging import WandbSettings

#: `tsda fit` options every trial sets itself (what sets them): no override applies
SET_BY_THE_SEARCH = {
    "--trainer.max_epochs": "--epochs",
    "--seed_everything": "--seed",
    "--run_dir": "OUT/trials/<number>/run",
    "--test_after_fit": "false: the trials never read the test split",
    "--latent_plot": "false",
    "--model.init_args.augmentation": "the policy each trial draws from --space",
}


def build_parser() -> ArgumentParser:
    """The search's own options; `main` hands every other option to the trials."""
    p = command_parser(
        "tsda augment search",
        "search a TrivialAugment policy (ops, weights, magnitude ranges, rounds) with Optuna; "
        "other options are tsda fit overrides for every trial",
        config=False,  # its -c is the trials' fit config
    )
    p.add_argument(
        "-c",
        "--config",
        type=str | None,
        default=None,
        help="the tsda fit config every trial starts from (e.g. experiments/handcrafted/base.yaml)",
    )
    p.add_argument(
        "--space",
        type=str | None,
        default=None,
        help="search space YAML: ops, n, weight, magnitude, levels (default: the values of "
        "configs/search/policy_space.yaml)",
    )
    p.add_argument(
        "--out", type=str | None, default=None, help="search directory: study.db, trials/, search.json, policy.yaml"
    )
    p.add_argument("--trials", type=int, default=16, help="trials wanted in all (a rerun resumes)")
    p.add_argument("--workers", type=int, default=1, help="trials at once, in warm worker processes")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial's run")
    p.add_argument("--epochs", type=int, default=8, help="each trial's --trainer.max_epochs")
    p.add_argument("--wandb.mode", type=str, default="auto", help="W&B mode of the trials and the summary run")
    p.add_argument("--wandb.project", type=str, default="tsda", help="W&B project")
    return p


def parse(argv: list[str]) -> tuple[Namespace, list[str]]:
    """The parsed options and the overrides; a bad value, or an override of what the
    search sets itself, is a `TsdaError` naming the option."""
    parser = build_parser()
    own, overrides = split_known(argv, parser)
    cfg = parser.parse_args(own)
    for token in overrides:
        key = token.split("=", 1)[0]
        if key in SET_BY_THE_SEARCH:
            raise TsdaError(f"{key}: set by the search for every trial ({SET_BY_THE_SEARCH[key]}); drop it")
    if cfg.config is None:
        raise TsdaError("-c/--config is required: the tsda fit config every trial starts from")
    if cfg.out is None:
        raise TsdaError("--out is required: the search directory")
    return cfg, overrides


def main(argv: list[str]) -> None:
    """`tsda augment search ...`: exits 1 when no trial finished."""
    from tsda.campaign.search import SearchSettings, run_search
    from tsda.campaign.space import SearchSpace
    from tsda.commands.fit import check_fit_args  # Lightning: imported only to run

    cfg, overrides = parse(argv)
    wandb = WandbSettings(mode=cfg.wandb.mode, project=cfg.wandb.project)
    if wandb.mode not in ("auto", "online", "offline", "disabled"):
        raise TsdaError(f"--wandb.mode must be auto, online, offline or disabled, got {wandb.mode!r}")
    settings = SearchSettings(
        base=Path(cfg.config),
        out=Path(cfg.out),
        space=SearchSpace.from_yaml(cfg.space),
        trials=cfg.trials,
        workers=cfg.workers,
        seed=cfg.seed,
        epochs=cfg.epochs,
        overrides=tuple(overrides),
        wandb=wandb,
    )
    result = run_search(settings, check=check_fit_args)
    if result["best"] is None:
        print(
            f"tsda augment search: no trial finished; see {Path(cfg.out) / 'search.json'} and the trials' run.log",
            flush=True,
        )
        raise SystemExit(1)
