"""`TsdaError`: bad input a user can fix (a file, a flag, a checkpoint).

Raised anywhere in tsda with a message that names what is wrong and where; the `tsda`
command prints it as `tsda: error: <message>` and exits with status 2, without a traceback.
It is a `ValueError`, so library callers may catch either.
"""

from __future__ import annotations


class TsdaError(ValueError):
    """Bad input: the message names the file, column, row, flag or checkpoint."""
