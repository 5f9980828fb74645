"""Reading checkpoints safely: the one place tsda opens a checkpoint file.

Checkpoints are read with `torch.load(..., weights_only=True)`: tensors, numbers, strings,
lists, tuples and dicts of them (what Lightning and tsda store: weights, optimiser and
callback states, hyper-parameters, generator states, scheduler configs) load; anything that
would need unpickling arbitrary objects (and could run code) is refused with a clear error.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, TypeVar

import lightning as L
import torch

from tsda.errors import TsdaError

M = TypeVar("M", bound=L.LightningModule)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's dictionary, on CPU, read with `weights_only=True`.

    Raises:
        FileNotFoundError: no such file.
        TsdaError: a truncated or foreign file, or one holding objects other than weights
            and plain data (refused: loading it could run code).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe files fail in many ways
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TsdaError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {reason})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise TsdaError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def import_checkpoint_class(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Import the module of the class a `tsda fit` checkpoint names (`_class_path` in its
    hyper-parameters) when it is tsda's own: Lightning loads a checkpoint of a subclass of
    the requested class (a `JointModule` asked for as a `ClassifierModule`) only once that
    subclass is imported. Nothing outside `tsda.` is ever imported."""
    class_path = str((ckpt.get("hyper_parameters") or {}).get("_class_path") or "")
    module_name = class_path.rpartition(".")[0]
    if module_name.startswith("tsda."):
        try:
            importlib.import_module(module_name)
        except ImportError as exc:
            raise TsdaError(f"{path}: its class {class_path} cannot be imported ({exc})") from exc


def load_module(cls: type[M], path: str | os.PathLike[str], **kwargs: Any) -> M:
    """`cls.load_from_checkpoint(path, **kwargs)` with `weights_only=True`, after
    `read_checkpoint` has checked the file (same errors); a checkpoint of a tsda subclass of
    `cls` loads as that subclass (`import_checkpoint_class`)."""
    import_checkpoint_class(read_checkpoint(path), path)
    return cls.load_from_checkpoint(path, weights_only=True, **kwargs)
