"""Options several commands share, declared once.

Every command that reads flows takes the data options of `tsda fit`: `--data.<name>` for
each argument of `FlowDataModule.__init__` (types, defaults and help from its signature
and docstring, through jsonargparse), so `tsda test`, `tsda evaluate`, `tsda augment` and
`tsda data describe` accept the same `--data.path`, `--data.invalid_rows`,
`--data.min_class_size`, column renames, ... as a fit config's `data:` section (and a
`-c config.yaml` holding one).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from tsda.data.datamodule import FlowDataModule


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
