"""Reading checkpoints safely: the one place tsda opens a checkpoint file.

Checkpoints are read with `torch.load(..., weights_only=True)`: tensors, numbers, strings,
lists, tuples and dicts of them (what Lightning and tsda store: weights, optimiser and
callback states, hyper-parameters, generator states, scheduler configs) load; anything that
would need unpickling arbitrary objects (and could run code) is refused with a clear error.

A checkpoint names its module's class by path (`tsda_class_path`, LightningCLI's `_class_path`).
Checkpoints written before the model families got their own folders name the old paths
(`tsda.lit.gan.GANModule`); `read_checkpoint` maps them to today's (`MOVED_MODULES`), so they
keep loading everywhere a checkpoint is read.
"""

from __future__ import annotations

import importlib
import io
import os
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch

from tsda.errors import TsdaError

M = TypeVar("M", bound=L.LightningModule)

#: the modules of the old flat layout (`tsda/lit/`, `tsda/nets/`) and where their classes live now
MOVED_MODULES: dict[str, str] = {
    "tsda.lit.classifier": "tsda.classifier.module",
    "tsda.lit.ensemble": "tsda.classifier.ensemble",
    "tsda.nets.classifier": "tsda.classifier.nets",
    "tsda.lit.gan": "tsda.generators.gan.module",
    "tsda.nets.gan": "tsda.generators.gan.nets",
    "tsda.lit.diffusion": "tsda.generators.diffusion.module",
    "tsda.nets.denoiser": "tsda.generators.diffusion.nets",
    "tsda.lit.transformer": "tsda.generators.transformer.module",
    "tsda.nets.transformer": "tsda.generators.transformer.nets",
    "tsda.lit.joint": "tsda.joint.module",
    "tsda.lit.joint_gan": "tsda.joint.gan",
}


def current_class_path(class_path: str) -> str:
    """`class_path` with its module mapped through `MOVED_MODULES` (unchanged when not moved):
    `tsda.lit.gan.GANModule` -> `tsda.generators.gan.module.GANModule`."""
    module, dot, name = class_path.rpartition(".")
    return f"{MOVED_MODULES[module]}{dot}{name}" if module in MOVED_MODULES else class_path


def _map_class_paths(value: Any) -> Any:
    """`value` (a checkpoint's plain data) with every string naming a moved class mapped."""
    if isinstance(value, dict):
        return {k: _map_class_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_class_paths(v) for v in value)
    if isinstance(value, str) and value.startswith(("tsda.lit.", "tsda.nets.")):
        return current_class_path(value)
    return value


def _read_stored(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's dictionary as stored, on CPU, read with `weights_only=True`.

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


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's dictionary, on CPU, read with `weights_only=True`, its class paths
    today's (`MOVED_MODULES`). Same errors as `_read_stored`."""
    return _current(_read_stored(path))


def _names_moved(value: Any) -> bool:
    """Whether `value` (plain data, tensors) holds a string naming a class under an old path."""
    if isinstance(value, dict):
        return any(_names_moved(v) for k, v in value.items() if k != "state_dict")
    if isinstance(value, (list, tuple)):
        return any(_names_moved(v) for v in value)
    return isinstance(value, str) and current_class_path(value) != value


def _current(ckpt: dict[str, Any]) -> dict[str, Any]:
    return {key: value if key == "state_dict" else _map_class_paths(value) for key, value in ckpt.items()}


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
    `cls` loads as that subclass (`import_checkpoint_class`). A checkpoint naming moved classes
    is handed to Lightning with today's class paths (re-serialised in memory)."""
    stored = _read_stored(path)
    ckpt = _current(stored)
    import_checkpoint_class(ckpt, path)
    source: str | Path | io.BytesIO = path if isinstance(path, (str, Path)) else Path(path)
    if _names_moved(stored):
        source = io.BytesIO()
        torch.save(ckpt, source)
        source.seek(0)
    return cls.load_from_checkpoint(source, weights_only=True, **kwargs)


def reshape_optimizer_states(checkpoint: dict[str, Any], params: list[torch.Tensor]) -> None:
    """Give the optimiser moments of a weight that has since gained a singleton axis (the
    CNN's convolution weights were `(C_out, C_in, k)`, now `(C_out, C_in, 1, k)`) that axis, so
    that `--ckpt_path` resumes a run of the earlier form. `checkpoint` holds one optimiser
    over `params`, in its order (its state is keyed by their index)."""
    (state,) = checkpoint.get("optimizer_states") or [{}]
    for index, values in state.get("state", {}).items():
        if not isinstance(index, int) or index >= len(params) or params[index].dim() != 4:
            continue
        shape = params[index].shape
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and value.shape == shape[:2] + shape[3:] and shape[2] == 1:
                values[key] = value.unsqueeze(2)
