"""How every `tsda` command reads its options: one spelling, readable errors.

Every command parses with a jsonargparse parser of `CommandErrors` (`tsda.commands.options.
command_parser` builds them; `tsda fit`'s LightningCLI and `tsda test` use its Lightning
variant), so the rules hold once for all of them:

- One spelling: options are written with underscores (`--per_class`, `--data.train_fraction`,
  `--trainer.max_epochs`, LightningCLI's own convention). A hyphen spelling of an option
  that exists with underscores is refused, naming the right one, before anything is parsed.
- Readable errors: jsonargparse's messages ("Parser key ...: Does not validate against any
  of the Union subtypes ...", "unrecognized arguments: ...") are rewritten as `--OPTION:
  the rule, what was given` and raised as `TsdaError`, which the `tsda` dispatcher prints as
  `tsda: error: ...` (exit 2) instead of a usage dump.

jsonargparse also builds parsers of the same class for its own use (nested class types),
with `exit_on_error=False`: those keep raising jsonargparse's `ArgumentError`, which it
catches while it tries alternatives.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

from jsonargparse import ArgumentParser, Namespace

from tsda.errors import TsdaError

#: jsonargparse's "Parser key" messages: the key, maybe a list element, the rest
_KEY = re.compile(r'Parser key "(?P<key>[^"]+)"(?: element (?P<element>\d+))?:\s*(?P<rest>.*)', re.S)
#: the value jsonargparse reports as given
_GIVEN = re.compile(r"(?:Got value|Given value): (?P<value>.*?)\s*$", re.M)
#: argparse's messages about one argument
_ARGUMENT = re.compile(r"argument (?P<flag>[^:]+): (?P<rest>.*)", re.S)
_CHOICE = re.compile(r"invalid choice: (?P<value>'[^']*') \(choose from (?P<choices>.*)\)")


def prog_name(parser: ArgumentParser) -> str:
    """The command as the user typed it (`tsda sample`; LightningCLI's `tsda [options] fit`
    without the placeholder)."""
    return " ".join(parser.prog.replace("[options]", "").split())


def _prefix_known(key: str, known: set[str]) -> bool:
    """Whether a dotted prefix of `key` is an option (`--model` for `--model.init_args.x`,
    whose nested keys jsonargparse resolves only once the class is known)."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in known for i in range(1, len(parts)))


def refuse_hyphens(parser: ArgumentParser, args: Sequence[str]) -> None:
    """The one spelling: an option token written with hyphens (`--per-class`, `--data.
    train-fraction`) whose underscore spelling `parser` knows is refused, naming it.

    Raises:
        TsdaError: `--per-class: options are spelled with underscores: --per_class`.
    """
    known = option_strings(parser)
    for token in args:
        if not token.startswith("--") or token == "--":
            continue
        key = token.split("=", 1)[0]
        underscored = "--" + key[2:].replace("-", "_")
        if key in known or underscored == key:
            continue
        if underscored in known or _prefix_known(underscored, known):
            raise TsdaError(f"{key}: options are spelled with underscores: {underscored}")


def describe_type(hint: Any) -> str:
    """A type hint as the rule a user reads: `a number`, `an integer or null`, `one of
    error, drop`, ..."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a text", type(None): "null"}
    if hint in names:
        return names[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe_type(a) for a in args))
    if origin in (list, tuple, set, Sequence, Iterable) or hint in (list, tuple):
        return f"a list of {describe_type(args[0])}s" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping (YAML or JSON, e.g. '{key: value}')"
    return getattr(hint, "__name__", str(hint))


def _subparsers(parser: ArgumentParser) -> list[ArgumentParser]:
    """The parsers of `parser`'s subcommands (LightningCLI's `fit`, ...)."""
    return [
        sub
        for action in parser._actions
        if isinstance(action.choices, Mapping)
        for sub in action.choices.values()
        if isinstance(sub, ArgumentParser)
    ]


def option_strings(parser: ArgumentParser) -> set[str]:
    """Every option string `parser` and its subcommands' parsers know."""
    known = {s for action in parser._actions for s in action.option_strings}
    for sub in _subparsers(parser):
        known |= option_strings(sub)
    return known


def _action(parser: ArgumentParser, key: str) -> Any:
    """The action of the dotted `key` in `parser` or its subcommands' (None when not found)."""
    for action in parser._actions:
        if action.dest == key or f"--{key}" in action.option_strings:
            return action
    return next((a for sub in _subparsers(parser) if (a := _action(sub, key)) is not None), None)


def _flag(parser: ArgumentParser, dest: str) -> str:
    """How the user writes the argument `dest`: its long option, or its name (positional)."""
    action = _action(parser, dest)
    strings = getattr(action, "option_strings", None) or []
    if strings:
        return max(strings, key=len)
    return dest.upper() if action is not None else f"--{dest}"


def _plain(rule: str) -> str:
    """A jsonargparse rule line in words: `Expected a <class 'float'>. Got value: x` ->
    `expected a number`."""
    line = _GIVEN.sub("", rule.strip().splitlines()[0] if rule.strip() else "an invalid value").strip()
    line = re.sub(r"a <class '(\w+)'>", lambda m: describe_type(_BUILTINS.get(m[1], m[1])), line)
    line = line.rstrip(". ")
    return line[:1].lower() + line[1:]


_BUILTINS: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str, "NoneType": type(None)}
#: a class's argument given a bad value or an unknown name (`--model.init_args.*`)
_NESTED = re.compile(r"Problem with given class_path '(?P<cls>[\w.]+)':\s*(?P<rest>.*?)(?=\n\s*- |\Z)", re.S)


def _nested_value(key: str, message: str) -> str | None:
    """A class argument's error (`--model.init_args.lr abc`, `--model.init_args.foo`),
    naming the argument in full."""
    nested = _NESTED.search(message)
    if nested is None:
        return None
    path, rest = nested["cls"], nested["rest"]
    inner = _KEY.search(rest)
    if inner is not None:
        given = _GIVEN.findall(inner["rest"])
        return f"--{key}.init_args.{inner['key']}: {_plain(inner['rest'])}" + (f", got {given[-1]!r}" if given else "")
    option = re.search(r"Option '([^']+)' is not accepted", rest)
    if option is not None:
        return f"--{key}.init_args.{option[1]}: not an argument of {path.rsplit('.', 1)[-1]} ({path})"
    return f"--{key}: {path}: {' '.join(rest.split())}"


def _invalid_value(parser: ArgumentParser, message: str) -> str | None:
    """`Parser key "k": Expected ... Got value: v` as `--k: expected <rule>, got 'v'`."""
    match = _KEY.match(message.strip())
    if match is None:
        return None
    key = match["key"]
    nested = _nested_value(key, match["rest"])
    if nested is not None:
        return nested
    hint = getattr(_action(parser, key), "_typehint", None)
    rule = f"expected {describe_type(hint)}" if hint is not None else _plain(match["rest"])
    given = _GIVEN.findall(match["rest"])
    return f"--{key}: {rule}" + (f", got {given[-1]!r}" if given else "")


def _linked(text: str) -> str | None:
    """A value given to an option that another one sets (a jsonargparse link): `argument
    _seed(seed_everything) --> data.sampler_seed: ...`."""
    link = re.match(r"argument (?P<source>.+?) --> (?P<target>[\w.]+):", text)
    if link is None:
        return None
    source = re.findall(r"[\w.]+", link["source"])[-1]
    return f"--{link['target']}: set from --{source} (a link): give --{source} instead"


def _unrecognized(parser: ArgumentParser, words: str) -> str:
    """`unrecognized arguments: --x 1` as `--x: not an option of PROG`, with the nearest
    options it may mean."""
    tokens = words.split()
    option = next((t.split("=", 1)[0] for t in tokens if t.startswith("-")), None)
    prog = prog_name(parser)
    if option is None:
        return f"unexpected argument {tokens[0]!r} ({prog} --help lists its arguments)"
    near = difflib.get_close_matches(option, sorted(option_strings(parser)), n=3, cutoff=0.75)
    hint = f" (did you mean {' or '.join(near)}?)" if near else f" ({prog} --help lists its options)"
    return f"{option}: not an option of {prog}{hint}"


def readable(parser: ArgumentParser, message: str) -> str:
    """jsonargparse's or argparse's error `message` as `--OPTION: rule, what was given`."""
    text = message.strip()
    if text.startswith("unrecognized arguments:"):
        return _unrecognized(parser, text.split(":", 1)[1])
    if text.startswith("the following arguments are required:"):
        dests = [d.strip() for d in text.split(":", 1)[1].split(",")]
        subs = {prog_name(sub).rsplit(" ", 1)[-1]: sub for sub in _subparsers(parser)}
        root = dests[0].split(".", 1)[0]
        if root in subs:  # LightningCLI's `fit.model`: the subcommand's own option
            parser, dests = subs[root], [d.split(".", 1)[-1] for d in dests]
        return ", ".join(_flag(parser, d) for d in dests) + f": required ({prog_name(parser)} --help)"
    invalid = _invalid_value(parser, text) or _linked(text)
    if invalid is not None:
        return invalid
    argument = _ARGUMENT.match(text)
    if argument is not None:
        flag, rest = argument["flag"].split("/")[-1], argument["rest"]
        choice = _CHOICE.search(rest)
        if choice is not None:
            return f"{flag}: expected one of {choice['choices'].replace(chr(39), '')}, got {choice['value']}"
        return f"{flag}: {'expected a value' if rest.startswith('expected one argument') else rest}"
    return f"{prog_name(parser)}: {' '.join(text.split())}"


class CommandErrors:
    """Mixin over a jsonargparse parser class: hyphen spellings refused before parsing,
    errors raised as readable `TsdaError`s (see the module docstring)."""

    def parse_args(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        namespace: Namespace | None = None,
        env: bool | None = None,
        defaults: bool = True,
        **kwargs: Any,
    ) -> Namespace:
        """jsonargparse's `parse_args`, after `refuse_hyphens`."""
        if args is not None:
            refuse_hyphens(self, list(args))  # type: ignore[arg-type]
        return super().parse_args(args, namespace, env, defaults, **kwargs)  # type: ignore[misc]

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Raise `TsdaError(readable(message))`; a parser that must not exit (jsonargparse's
        internal ones, `exit_on_error=False`) raises jsonargparse's error as before."""
        if not getattr(self, "exit_on_error", True):
            super().error(message, ex)  # type: ignore[misc]
        raise TsdaError(readable(self, message)) from ex  # type: ignore[arg-type]


class CommandParser(CommandErrors, ArgumentParser):  # type: ignore[misc]  # parse_args: same signature
    """The jsonargparse parser of every `tsda` command but the Lightning ones."""


def split_known(argv: Sequence[str], parser: ArgumentParser) -> tuple[list[str], list[str]]:
    """`(what parser takes, the rest)`, each in order: for commands that pass every other
    option on (`tsda campaign run`, `tsda augment search`: `tsda fit` overrides). `parser`'s
    options go with their value, its positionals are the first tokens that are no value of
    another option. Hyphen spellings of `parser`'s options are refused first (they would
    otherwise pass on)."""
    refuse_hyphens(parser, argv)
    takes_value = {s: a.nargs != 0 for a in parser._actions for s in a.option_strings}
    positionals = sum(1 for a in parser._actions if not a.option_strings)
    own, rest, i, after_other = [], [], 0, False
    while i < len(argv):
        token, key = argv[i], argv[i].split("=", 1)[0]
        if key in takes_value:
            own.append(token)
            if "=" not in token and takes_value[key] and i + 1 < len(argv):
                own.append(argv[i + 1])
                i += 1
        elif not token.startswith("-") and not after_other and positionals > 0:
            own.append(token)
            positionals -= 1
        else:
            rest.append(token)
        after_other = token.startswith("-") and key not in takes_value and "=" not in token
        i += 1
    return own, rest


def refuse_foreign(argv: Sequence[str], parser: ArgumentParser, others: Iterable[ArgumentParser]) -> None:
    """Refuse an option that `parser` lacks but another command of its group has (`tsda
    campaign report --executor`, `tsda augment preview --copies`), naming that command.

    Raises:
        TsdaError: `--executor: an option of tsda campaign run, not of tsda campaign report`.
    """
    own = option_strings(parser)
    for token in argv:
        key = token.split("=", 1)[0]
        if not key.startswith("--") or key in own:
            continue
        for other in others:
            if key in option_strings(other):
                raise TsdaError(f"{key}: an option of {prog_name(other)}, not of {prog_name(parser)}")
