"""`tsda fit`: Lightning's CLI (LightningCLI) with tsda's run directory, loggers,
checkpointing and `metrics.json`.

    tsda fit -c configs/experiment/synthetic_baseline.yaml [--overrides]

Every Trainer option passes through (`--trainer.accelerator gpu --trainer.devices 4
--trainer.strategy ddp --trainer.precision bf16-mixed`). After training, the best
checkpoint (by the module's monitor; generators: the last one) is tested (unless
`--test_after_fit false`: the test split is then never read, as a policy search needs) and
the run's `metrics.json` written; `check_fit_args` parses the same arguments without running
anything (campaigns validate every condition with it before the first run).

Its parser is every tsda command's (`tsda.commands.options.command_parser` with
`LightningCommandParser`): options spelled with underscores, readable `tsda: error:`
messages; the three ways to build the CLI (run, parse only, build only) go through one
function, `fit_cli`, so their parser and defaults cannot drift apart.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from tsda.callbacks import LatentPlotCallback
from tsda.commands.options import command_parser, data_rules, refuse_inapplicable
from tsda.commands.parsing import CommandErrors
from tsda.data.datamodule import FlowDataModule
from tsda.errors import TsdaError
from tsda.lit.distributed import strategy_for
from tsda.logging import WandbSettings, finish_wandb_run, run_loggers
from tsda.runs import default_run_dir, write_json_atomic


def _seed(value: Any) -> int:
    return 0 if isinstance(value, bool) or value is None else int(value)


class LightningCommandParser(CommandErrors, LightningArgumentParser):  # type: ignore[misc]  # parse_args: same signature
    """Lightning's parser (Trainer and class arguments) with the rules of every tsda
    command (`tsda.commands.parsing`): `tsda fit`'s and `tsda test`'s."""


class TsdaCLI(LightningCLI):
    """LightningCLI with tsda's run directory, loggers, checkpointing and metrics.json."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # the run's CPU seconds count from here: a warm worker's process ran other runs before
        self.cpu_started = time.process_time()
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Every parser of the CLI (main and `fit`) from the one builder of tsda commands."""
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={L.__version__}"])
        prog, description = kwargs.pop("prog", "tsda fit"), kwargs.pop("description", None)
        return command_parser(prog, description, parser_class=LightningCommandParser, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then refuse `--data.*` options that do not apply to the data source,
        before anything else (seeding, reading data) happens."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        refuse_inapplicable(self._parser(subcommand), cfg, data_rules())

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None, help="run directory (default runs/fit-<time>)")
        parser.add_argument(
            "--patience", type=int, default=10, help="early stopping patience in epochs (on the module's monitor)"
        )
        parser.add_argument(
            "--latent_plot",
            type=bool,
            default=True,
            help="write the run's latent t-SNE PNG after testing (costs ~10-20 s on CPU)",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="test the best checkpoint after training; false: the test split is never "
            "read (metrics.json without test_* keys; what `tsda augment search` trials use)",
        )
        parser.add_argument(
            "--compile",
            type=bool,
            default=False,
            help="torch.compile the module's networks (inductor; classifiers): faster steps "
            "after a one-off compilation that the on-disk cache keeps for later runs",
        )
        parser.add_class_arguments(WandbSettings, "wandb")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("seed_everything", "data.sampler_seed", compute_fn=_seed)
        parser.link_arguments("seed_everything", "model.init_args.seed", compute_fn=_seed)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        wandb = WandbSettings(**dict(cfg.wandb))
        monitor = getattr(type(self.model), "monitor", None)
        configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        callbacks = [
            *(configured if isinstance(configured, list) else [configured]),
            *(kwargs.pop("callbacks", None) or []),
        ]  # the config's trainer.callbacks too
        if monitor is not None:
            metric, mode = monitor
            callbacks.append(
                ModelCheckpoint(
                    dirpath=self.run_dir / "checkpoints", monitor=metric, mode=mode, save_top_k=1, filename="best"
                )
            )
            callbacks.append(
                EarlyStopping(monitor=metric, mode=mode, patience=cfg.patience, check_on_train_epoch_end=False)
            )  # at validation end: a run
            # that max_steps stops mid-epoch (no validation yet) ends instead of failing
        # every run keeps last.ckpt, the state to resume from with --ckpt_path, written at the end
        # of every training epoch (after that epoch's validation, so early stopping and the best
        # score travel with it; also when validation runs less often), so a run stopped by
        # max_time or killed loses at most the epoch in progress; modules without a score to
        # rank by (generators) are tested and sampled from it
        callbacks.append(
            ModelCheckpoint(
                dirpath=self.run_dir / "checkpoints",
                filename="last",
                save_top_k=1,
                every_n_epochs=1,
                save_on_train_epoch_end=True,
            )
        )
        if cfg.latent_plot:
            callbacks.append(LatentPlotCallback(self.run_dir / "latent_tsne.png"))
        kwargs["default_root_dir"] = str(self.run_dir)
        kwargs["logger"] = run_loggers(self.run_dir, wandb, config=_plain_config(cfg))
        # a manually optimised module (cGAN, joint) under a plain DDP strategy gets DDP's
        # unused-parameter search (`tsda.lit.distributed`)
        strategy = self._get(self.config_init, "trainer", default={}).get("strategy")
        if strategy_for(self.model, strategy) != strategy:
            kwargs["strategy"] = strategy_for(self.model, strategy)
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def before_fit(self) -> None:
        if self.config[self.subcommand].compile:
            compile_networks(self.model)

    def after_fit(self) -> None:
        trainer, model = self.trainer, self.model
        fit_seconds = time.perf_counter() - self.started
        callback = trainer.checkpoint_callback
        assert callback is None or isinstance(callback, ModelCheckpoint)  # Lightning types it the base Checkpoint
        # the best checkpoint where the module has a monitor, else the last one
        ckpt = (callback.best_model_path or callback.last_model_path) if callback else ""
        if self.config[self.subcommand].test_after_fit:
            metrics = run_test(trainer, model, self.datamodule, ckpt or None)
        else:
            metrics = (
                {"n_flows": {k: len(v) for k, v in self.datamodule.splits.items()}}
                if isinstance(self.datamodule, FlowDataModule)
                else {}
            )
        epochs = trainer.current_epoch
        metrics.update(
            {
                "epochs": epochs,
                "seconds": time.perf_counter() - self.started,
                "fit_seconds": fit_seconds,
                "seconds_per_epoch": fit_seconds / max(epochs, 1),
                "best_checkpoint": ckpt,
                "best_score": float(callback.best_model_score)
                if callback and callback.best_model_score is not None
                else None,
                "seed": _seed(self.config[self.subcommand].seed_everything),
                "cpu_seconds": time.process_time() - self.cpu_started,  # this run's, all threads
            }
        )
        write_run_metrics(trainer, self.run_dir, metrics)


def compile_networks(model: L.LightningModule) -> None:
    """`--compile true`: compile the networks of `model` in place (`nn.Module.compile`, so
    checkpoints keep their keys and load uncompiled anywhere).

    Raises:
        TsdaError: the module has no networks to compile (`compile_networks`), naming `--compile`.
    """
    compile_fn = getattr(model, "compile_networks", None)
    if compile_fn is None:
        raise TsdaError(
            f"--compile: {type(model).__name__} has no networks to compile (supported: classifiers); drop --compile"
        )
    compile_fn()


def run_test(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule | None,
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    """Test `model` (weights from `ckpt_path` when given) with `trainer` and collect what
    `metrics.json` holds: the logged `test_*` metrics, the module's `run_metrics()` and the
    flows per split of a `FlowDataModule`. Modules without a `test_step` are not tested."""
    metrics: dict[str, Any] = {}
    if type(model).test_step is not L.LightningModule.test_step:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_")})
    run_metrics = getattr(model, "run_metrics", None)  # a tsda module's own metrics
    if run_metrics is not None:
        metrics.update(run_metrics())
    if isinstance(datamodule, FlowDataModule):
        metrics["n_flows"] = {k: len(v) for k, v in datamodule.splits.items()}
    return metrics


def write_run_metrics(trainer: L.Trainer, run_dir: Path, metrics: dict[str, Any]) -> None:
    """On the global-zero rank: write `run_dir/metrics.json` atomically and print a summary."""
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "metrics.json", metrics)
        _print_summary(metrics, run_dir)


def _plain_config(cfg: Any) -> dict[str, Any]:
    """A JSON-able view of the parsed config for the loggers."""
    import json

    def default(o: Any) -> str:
        return str(o)

    try:
        return json.loads(json.dumps(cfg.as_dict(), default=default))
    except Exception:  # noqa: BLE001 - logging the config must never stop a run
        return {}


def _print_summary(metrics: dict[str, Any], run_dir: Path) -> None:
    keys = [k for k in ("test_weighted_f1", "test_macro_f1", "test_accuracy") if k in metrics]
    parts = ", ".join(f"{k} = {metrics[k]:.4f}" for k in keys)
    epochs = f"{metrics['epochs']} epochs " if "epochs" in metrics else ""
    print(
        f"\n{parts}{'; ' if parts else ''}{epochs}in {metrics['seconds']:.1f} s; metrics: {run_dir / 'metrics.json'}",
        flush=True,
    )


CLI = TypeVar("CLI", bound=TsdaCLI)

#: the Trainer defaults of every `tsda fit` run (a config or `--trainer.*` overrides them)
TRAINER_DEFAULTS = {"use_distributed_sampler": False, "deterministic": "warn", "max_epochs": 20}


def fit_cli(cli_class: type[CLI], args: Sequence[str], run: bool = True) -> CLI:
    """`cli_class` (`TsdaCLI` or a variant that stops early) on `tsda fit ARGS`: the one
    place the CLI is configured, so running, checking and building a run parse alike.
    `run=False` parses (and whatever `cli_class` instantiates) without the `fit` subcommand."""
    # `tsda fit` hands LightningCLI the arguments after `fit` on purpose
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    return cli_class(
        L.LightningModule,
        FlowDataModule,
        subclass_mode_model=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=dict(TRAINER_DEFAULTS),
        args=["fit", *args] if run else list(args),
        parser_kwargs={"prog": "tsda" if run else "tsda fit"},
        run=run,
        auto_configure_optimizers=False,
    )


def run_fit(args: list[str]) -> TsdaCLI:
    """`tsda fit ...`: train, test the best checkpoint, write metrics.json."""
    try:
        return fit_cli(TsdaCLI, args)
    finally:
        finish_wandb_run()  # a later run in this process (a warm worker's) starts its own


class _ParseOnlyCLI(TsdaCLI):
    """Parses `tsda fit` arguments as `run_fit` does and instantiates nothing."""

    def instantiate_classes(self) -> None:
        pass

    def _set_seed(self) -> None:
        pass


def check_fit_args(args: list[str]) -> None:
    """Parse `tsda fit ARGS` (config files, keys, types) without building or running
    anything (no data read).

    Raises:
        TsdaError: the parser's message (`--KEY: rule, what was given`).
    """
    from jsonargparse import ArgumentError

    try:
        fit_cli(_ParseOnlyCLI, args, run=False)
    except (ArgumentError, TypeError, KeyError) as exc:  # what a nested parser may still raise
        message = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
        raise TsdaError(message[:600]) from None


def main(argv: list[str]) -> None:
    """`tsda fit ARGS`."""
    run_fit(argv)


class _BuildOnlyCLI(TsdaCLI):
    """Parses `tsda fit` arguments, seeds, and builds the datamodule and the model as
    `run_fit` does (same seed, same initial weights), without a Trainer or a run directory."""

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")


def build_fit(args: list[str]) -> tuple[L.LightningModule, FlowDataModule, Any, str]:
    """`(model, datamodule, config, config YAML)` of `tsda fit ARGS`, built as `run_fit` builds
    them (the global seed is set from `seed_everything` first, so the model's initial weights
    are those of the `tsda fit` run; the caller forks the global RNG if it must be kept)."""
    cli = fit_cli(_BuildOnlyCLI, args, run=False)
    return cli.model, cli.datamodule, cli.config, cli.parser.dump(cli.config, skip_none=False)
