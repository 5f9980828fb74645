"""Figures: matplotlib on the non-interactive Agg backend, imported only when a plot is
drawn, and saved atomically. A leaf module (imports only `tsda.runs`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tsda.runs import atomic_path


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically and close it; returns the path."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return path
