"""The `tsda` command: a dispatcher only; each command lives in `tsda/commands/<name>.py`.

    tsda fit -c configs/experiment/synthetic_baseline.yaml [--overrides]
    tsda test --ckpt CKPT [--data.path FILE --data.split none] [--out DIR]
    tsda data describe [--data.path FILE]
    tsda augment list | preview | enlarge | search
    tsda campaign run | report
    tsda ensemble JOBS.json    (many fit runs as batched ensembles; what --executor ensemble runs)
    tsda sample --ckpt CKPT --per_class N --out FILE.parquet
    tsda evaluate --data.path REAL --synthetic FILE.parquet [...] --out DIR

`tsda COMMAND --help` describes each. `fit` is Lightning's CLI (LightningCLI): every
Trainer option passes through (`--trainer.accelerator gpu --trainer.devices 4
--trainer.strategy ddp --trainer.precision bf16-mixed`).

Options are spelled with underscores in every command (`--per_class`, `--data.path`,
`--trainer.max_epochs`); a hyphen spelling is refused, naming the right one.

Errors: bad input, or an option that does not apply to the input, prints `tsda: error: <what, where>` and exits 2; `tsda --verbose ...` (or
`TSDA_VERBOSE=1`) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

USAGE = __doc__
#: `CUBLAS_WORKSPACE_CONFIG` for deterministic cuBLAS (Lightning's value for `deterministic`)
CUBLAS_WORKSPACE = ":4096:8"

#: every command and the module whose `main(argv)` serves it (imported on use)
COMMANDS: dict[str, str] = {
    name: f"tsda.commands.{name}"
    for name in ("fit", "test", "data", "augment", "campaign", "sample", "evaluate", "ensemble")
}


def main(argv: list[str] | None = None) -> None:
    """`tsda [--verbose] COMMAND ...`. Bad input (any `ValueError`: `TsdaError`, the data's
    `FlowDataError`, a parameter check; a missing file) prints `tsda: error: <message>` and
    exits 2 without a traceback; `--verbose` (or `TSDA_VERBOSE=1`) shows the traceback."""
    # torch reads the cuBLAS workspace setting once, at the process's first cuBLAS call:
    # deterministic cuBLAS (`tsda fit` runs with `trainer.deterministic`) needs it set before
    # any command can touch CUDA (Lightning sets it when a Trainer starts, too late for the
    # plain runs of a `tsda ensemble` process, whose batched groups train first); a value
    # already set is kept
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = os.environ.get("TSDA_VERBOSE", "") not in ("", "0")
    if argv and argv[0] == "--verbose":
        verbose, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"tsda: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    try:
        importlib.import_module(COMMANDS[command]).main(rest)
    except (ValueError, FileNotFoundError) as exc:  # TsdaError and FlowDataError are ValueErrors
        if verbose:
            raise
        print(f"tsda: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
