"""Checking `tsda` command errors in tests: the exit status 2 and the `tsda: error:` line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@contextmanager
def cli_error(capsys, pattern: str) -> Iterator[None]:
    """The `tsda` command exits with status 2 and prints an error matching `pattern`."""
    with pytest.raises(SystemExit) as exc:
        yield
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tsda: error: ") and re.search(pattern, err), err
