"""Options several commands share, declared once.

Every command that reads flows takes the data options of `tsda fit`: `--data.<name>` for
each argument of `FlowDataModule.__init__` (types, defaults and help from its signature
and docstring, through jsonargparse), so `tsda test`, `tsda evaluate`, `tsda augment` and
`tsda data describe` accept the same `--data.path`, `--data.invalid_rows`,
`--data.min_class_size`, column renames, ... as a fit config's `data:` section (and a
`-c config.yaml` holding one).

Every command states which of its options apply to which input (`Applies`): an option given
where it does not apply (a column rename with the embedded dataset, `--strength` without
`--vary`, a ray option with another executor) is refused, naming it, before any work
(`refuse_inapplicable`).

Every command that computes outside a Trainer (`tsda evaluate`'s latent classifier, `tsda
augment preview / enlarge`, the benchmarks) reads its `--device` with `resolve_device`:
`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`, checked before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from tsda.commands.parsing import CommandParser, refuse_foreign
from tsda.data.datamodule import FlowDataModule
from tsda.errors import TsdaError

P = TypeVar("P", bound=ArgumentParser)


@overload
def command_parser(
    prog: str, description: str | None, *, config: bool = ..., parser_class: type[P], **kwargs: Any
) -> P: ...
@overload
def command_parser(prog: str, description: str | None, *, config: bool = ..., **kwargs: Any) -> ArgumentParser: ...
def command_parser(
    prog: str,
    description: str | None,
    *,
    config: bool = True,
    parser_class: type[ArgumentParser] = CommandParser,
    **kwargs: Any,
) -> ArgumentParser:
    """The parser of command `prog`, the one builder every command (and `tsda fit`'s
    LightningCLI, through `parser_class`) goes through, so all share its rules
    (`tsda.commands.parsing`: underscores only, readable `tsda: error:` messages); with
    `-c/--config` (a YAML of any of its options) unless `config` is False (a command whose
    `-c` means something else). Options are never abbreviated (`--max_packet` is not
    `--max_packets`): one spelling."""
    parser = parser_class(prog=prog, description=description, **{"allow_abbrev": False, **kwargs})
    if config:
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML with any of these options")
    return parser


@dataclass(frozen=True)
class Applies:
    """Options (dotted keys, as parsed) that apply only when `when(config)` holds;
    `reason` says when, completing the refusal `--KEY: REASON`."""

    keys: tuple[str, ...]
    when: Callable[[Namespace], bool]
    reason: str


def given(parser: ArgumentParser, cfg: Namespace, key: str) -> bool:
    """Whether option `key` was set (command line or `-c` config) to other than its default:
    a default is never an inapplicable choice, whatever the input."""
    return bool(cfg.get(key) != parser.get_default(key))


def refuse_inapplicable(parser: ArgumentParser, cfg: Namespace, rules: Iterable[Applies]) -> None:
    """Refuse the first option of `rules` given where it does not apply.

    Raises:
        TsdaError: `--KEY: REASON`, before the command does any work.
    """
    for rule in rules:
        if rule.when(cfg):
            continue
        for key in rule.keys:
            if given(parser, cfg, key):
                raise TsdaError(f"--{key}: {rule.reason}")


#: `FlowDataModule` options that name a flow file's columns: a file's business
DATA_COLUMNS = (
    "label_column",
    "sizes_column",
    "directions_column",
    "times_column",
    "packets_column",
    "group_column",
    "split_column",
)


def data_rules(prefix: str = "data", keep: Sequence[str] = ()) -> list[Applies]:
    """Which `--data.*` options apply to which source: column names to a `--data.path`
    file only; `keep` (e.g. `split_column`, which `tsda augment enlarge` writes) apply to
    the embedded dataset too. (The simulator's `synthetic_*` settings are left alone with a
    file: base configs carry them and conditions swap the source.)"""

    def has_path(cfg: Namespace) -> bool:
        return cfg.get(f"{prefix}.path") is not None

    return [
        Applies(
            tuple(f"{prefix}.{k}" for k in DATA_COLUMNS if k not in keep),
            has_path,
            "names a column of a flow file: it needs --data.path FILE (the embedded synthetic dataset has "
            "fixed columns)",
        ),
    ]


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


def pick_subcommand(
    group: str,
    argv: Sequence[str],
    parsers: Mapping[str, Callable[[], ArgumentParser]],
    usage: str,
    passes_on: Sequence[str] = (),
) -> tuple[str, ArgumentParser, list[str]] | None:
    """`(name, its parser, its arguments)` of `tsda GROUP NAME ARGS` (`tsda data`, `tsda
    augment`, `tsda campaign`), an option of a sibling command refused first, naming the
    command it belongs to (not for the commands in `passes_on`, whose other options are
    `tsda fit`'s: `--data.*` is theirs too); None once `usage` is printed (`-h`, `--help`,
    `help`).

    Raises:
        TsdaError: no command or an unknown one, listing the commands.
    """
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(usage)
        return None
    names = ", ".join(parsers)
    if not argv or argv[0] not in parsers:
        given = f"unknown command {argv[0]!r}" if argv else "a command is needed"
        raise TsdaError(f"tsda {group}: {given}; the commands are {names} (tsda {group} --help)")
    name, rest = argv[0], list(argv[1:])
    parser = parsers[name]()
    if name not in passes_on and not {"-h", "--help"} & set(rest):
        refuse_foreign(rest, parser, [make() for other, make in parsers.items() if other != name])
    return name, parser, rest
