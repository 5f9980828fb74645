"""Options several commands share, declared once.

Every command that reads flows takes the data options of `tsda fit`: `--data.<name>` for
each argument of `FlowDataModule.__init__` (types, defaults and help from its signature
and docstring, through jsonargparse), so `tsda test`, `tsda evaluate`, `tsda augment` and
`tsda data describe` accept the same `--data.path`, `--data.invalid_rows`,
`--data.min_class_size`, column renames, ... as a fit config's `data:` section (and a
`-c config.yaml` holding one).

Every command that computes outside a Trainer (`tsda evaluate`'s latent classifier, `tsda
augment preview / enlarge`, the benchmarks) reads its `--device` with `resolve_device`:
`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`, checked before any work.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from tsda.data.datamodule import FlowDataModule
from tsda.errors import TsdaError


def command_parser(prog: str, description: str | None) -> ArgumentParser:
    """A jsonargparse parser for command `prog` with `-c/--config` (a YAML of any of its
    options); a bad flag prints the usage and exits 2, as argparse does."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML with any of these options")
    return parser


def add_data_arguments(parser: ArgumentParser, skip: Iterable[str] = ("class_names",)) -> None:
    """`--data.<arg>` for every `FlowDataModule` argument except `skip`."""
    parser.add_class_arguments(FlowDataModule, "data", skip=set(skip), instantiate=False)


def data_kwargs(cfg: Namespace) -> dict[str, Any]:
    """The parsed `--data.*` options as `FlowDataModule` keyword arguments."""
    return cfg.data.as_dict() if isinstance(cfg.data, Namespace) else dict(cfg.data)


def build_datamodule(cfg: Namespace, **overrides: Any) -> FlowDataModule:
    """`FlowDataModule(**data options, **overrides)`; a `--data.path` that is not a file
    fails here, naming the flag."""
    kwargs = {**data_kwargs(cfg), **overrides}
    path = kwargs.get("path")
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--data.path {path!r}: no such file")
    return FlowDataModule(**kwargs)


DEVICE_HELP = "cpu, cuda, cuda:N, or auto (default: cuda when present, else cpu)"


def resolve_device(value: str, flag: str = "--device") -> torch.device:
    """The torch device a `--device` option names: `auto` is CUDA when torch sees a GPU,
    else the CPU; `cpu`, `cuda` and `cuda:N` are taken as given once checked.

    Raises:
        TsdaError: not one of those (an unknown name, another device type), or a CUDA
            device this machine lacks (no GPU, a CPU build of torch, an index out of range),
            naming `flag`.
    """
    text = str(value).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise TsdaError(f"{flag} {value!r}: not a device; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise TsdaError(
                f"{flag} {value}: no CUDA device here (torch {torch.__version__}, {build}); "
                "use --device cpu or auto (on a GPU machine: make setup-gpu)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TsdaError(f"{flag} {value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
