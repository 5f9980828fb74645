"""`tsda test`: evaluate a trained classifier checkpoint on flows, possibly from another file.

    tsda test --ckpt runs/x/checkpoints/best.ckpt                       # the fit's own test split
    tsda test --ckpt CKPT --data.path OTHER.parquet --data.split none --data.min_class_size 0
    tsda test --ckpt CKPT ... --out runs/drift --trainer.accelerator gpu

Every `--data.*` option is `FlowDataModule`'s (the same as `tsda fit`'s). Options not given
default to what the checkpoint stored for its datamodule (source, `min_packets`,
`n_packets`, codec settings, split and seed), so a bare `tsda test --ckpt CKPT` re-tests the
run's own test split, and the codec always matches the one the model was trained with
unless overridden. One exception: `--data.min_class_size` defaults to 0, since the model's
classes decide what is tested (classes it never saw are reported, not silently curated
away; the model's own classes are the same flows either way, so the split is unchanged).
With `--data.split none` every flow is test.

Class names travel in the checkpoint (`hparams.class_names`); the file's labels are
matched by name. Flows of classes the model never saw are counted, printed and left out
(`unknown_classes: {name: count}` in `metrics.json`). `metrics.json` is written atomically
into `--out` (default `runs/test-<time>`), with the same test keys as `tsda fit` writes.
"""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser

from tsda.classifier.module import ClassifierModule
from tsda.commands.fit import LightningCommandParser, run_test, write_run_metrics
from tsda.commands.options import add_data_arguments, command_parser, data_rules, refuse_inapplicable
from tsda.data.datamodule import FlowDataModule
from tsda.errors import TsdaError
from tsda.lit.checkpoint import read_checkpoint
from tsda.logging import WandbSettings, run_loggers
from tsda.runs import default_run_dir

#: FlowDataModule init arguments that the command line may set (the model fixes the classes)
_DATA_ARGS = tuple(
    name for name in inspect.signature(FlowDataModule.__init__).parameters if name not in ("self", "class_names")
)

#: data settings `tsda test` does not take from the checkpoint (see the module docstring)
_NOT_INHERITED = ("min_class_size",)


def build_parser() -> LightningArgumentParser:
    """The `tsda test` parser: `--ckpt`, `--out`, `--data.*` (FlowDataModule), `--trainer.*`."""
    parser = command_parser("tsda test", __doc__, parser_class=LightningCommandParser)
    parser.add_argument("--ckpt", type=str, required=True, help="ClassifierModule checkpoint (.ckpt)")
    parser.add_argument(
        "--out",
        type=str | None,
        default=None,
        help="output directory for metrics.json and logs (default runs/test-<time>)",
    )
    add_data_arguments(parser)
    parser.add_lightning_class_args(L.Trainer, "trainer")
    parser.add_class_arguments(WandbSettings, "wandb")
    parser.set_defaults(
        {
            "trainer.enable_checkpointing": False,
            "trainer.use_distributed_sampler": False,
            "trainer.devices": 1,
            "data.min_class_size": 0,
        }
    )
    return parser


def read_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dictionary (on CPU, `weights_only`); a clear error when it is not a
    run's checkpoint with hyper-parameters."""
    ckpt = read_checkpoint(path)
    if "hyper_parameters" not in ckpt:
        raise TsdaError(f"{path}: not a Lightning checkpoint with hyper-parameters")
    return ckpt


def checkpoint_data_defaults(ckpt: dict[str, Any]) -> dict[str, Any]:
    """`{"data.<arg>": value}` of the FlowDataModule settings stored in `ckpt`."""
    stored = ckpt.get("datamodule_hyper_parameters") or {}
    return {f"data.{k}": v for k, v in dict(stored).items() if k in _DATA_ARGS and k not in _NOT_INHERITED}


def unknown_classes_line(unknown: dict[str, int]) -> str:
    """One human line about the flows left out because the model never saw their class."""
    if not unknown:
        return "every flow belongs to a class the model knows"
    listed = ", ".join(f"{name} ({n})" for name, n in sorted(unknown.items()))
    return f"left out {sum(unknown.values())} flows of {len(unknown)} classes the model never saw: {listed}"


def parse(argv: list[str]) -> tuple[Namespace, LightningArgumentParser, dict[str, Any]]:
    """Parse `argv` with the checkpoint's datamodule settings as the data defaults.

    Returns the config, the parser (to instantiate trainer callbacks) and the checkpoint.
    """
    parser = build_parser()
    ckpt = read_run_checkpoint(parser.parse_args(argv).ckpt)
    defaults = checkpoint_data_defaults(ckpt)
    if defaults:
        parser.set_defaults(defaults)
    cfg = parser.parse_args(argv)
    refuse_inapplicable(parser, cfg, data_rules())
    return cfg, parser, ckpt


def main(argv: list[str] | None = None) -> None:
    """`tsda test --ckpt CKPT [--data.* ...] [--out DIR] [--trainer.* ...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    cfg, parser, _ckpt = parse(argv)
    model = ClassifierModule.load_classifier(cfg.ckpt)

    # 1. the data, matched to the model's classes by name; bad input fails here, before
    #    anything is written
    datamodule = FlowDataModule(**cfg.data.as_dict(), class_names=model.class_names)
    source = datamodule.hparams.path or "synthetic"
    table = datamodule.table
    unknown = dict(datamodule.dropped_classes)
    print(f"tsda test: {source}: {unknown_classes_line(unknown)}", flush=True)
    test_rows = datamodule.splits["test"] if table.n_flows else np.empty(0, dtype=np.int64)  # (N_test,)
    if len(test_rows) == 0:
        raise ValueError(
            f"{source}: no test flow of a class the model knows (model classes: "
            f"{', '.join(model.class_names)}; {unknown_classes_line(unknown)})"
        )

    # 2. Lightning's Trainer runs the test loop
    out = Path(cfg.out) if cfg.out else default_run_dir("test")
    out.mkdir(parents=True, exist_ok=True)
    init = parser.instantiate_classes(cfg)
    trainer_kwargs = dict(vars(init.trainer))
    trainer_kwargs.update(default_root_dir=str(out), logger=run_loggers(out, WandbSettings(**dict(cfg.wandb))))
    trainer = L.Trainer(**trainer_kwargs)
    metrics = run_test(trainer, model, datamodule)

    # 3. metrics.json, like `tsda fit`
    support = np.bincount(table.labels[test_rows], minlength=len(model.class_names))  # (K,)
    metrics.update(
        {
            "checkpoint": str(Path(cfg.ckpt).resolve()),
            "source": str(source),
            "unknown_classes": unknown,
            "test_support": dict(zip(model.class_names, (int(n) for n in support.tolist()))),
            "seconds": time.perf_counter() - started,
        }
    )
    write_run_metrics(trainer, out, metrics)


if __name__ == "__main__":
    main()
