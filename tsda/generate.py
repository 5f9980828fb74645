"""`tsda sample`: draw flows from any trained generator checkpoint into a Parquet file.

    tsda sample --ckpt runs/fgnet_cgan/checkpoints/last.ckpt --per-class 500 --seed 0 \\
        --out runs/fgnet_cgan/synthetic.parquet
    tsda sample --ckpt CKPT --n 10000 --class-balanced --seed 1 --out FILE.parquet
    tsda sample --ckpt CKPT --n 2000 --labels com.whatsapp,com.spotify.music --out FILE.parquet
    tsda sample --ckpt DIFFUSION.ckpt --per-class 100 --steps 50 --sampler ddim --cfg-scale 2 ...

Flows are decoded to real units with the checkpoint's `FlowCodec` settings and written in
the tcbench schema (`tsda.data.sources.write_parquet`, atomic) plus a `generator` column
(`<class name>:<checkpoint path>`). Generator options (`--steps`, `--sampler`,
`--cfg-scale`, `--latent-guidance-scale`, `--option key=value`) go to the module's
`sample` only when given; a generator that does not know one raises `TypeError`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsda.data.batch import FlowBatch
from tsda.data.sources import write_parquet
from tsda.data.table import FlowTable
from tsda.lit.generative import GenerativeModule, load_generative


def plan_labels(
    class_names: Sequence[str],
    n: int | None = None,
    per_class: int | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """`(N,)` int64 classes to generate, grouped by class (class-balanced).

    `per_class` flows of each class (of `labels`, or every class), or `n` flows spread as
    evenly as possible over them (the first `n % k` classes get one more).

    Raises:
        ValueError: neither or both of `n` and `per_class`, a count < 1, an unknown label.
    """
    if (n is None) == (per_class is None):
        raise ValueError("give exactly one of --n and --per-class")
    if (n is not None and n < 1) or (per_class is not None and per_class < 1):
        raise ValueError("--n and --per-class must be >= 1")
    names = list(class_names)
    if labels:
        unknown = [name for name in labels if name not in names and not name.isdigit()]
        if unknown:
            raise ValueError(f"--labels: unknown classes {unknown}; the generator knows {names}")
        chosen = [int(name) if name not in names else names.index(name) for name in labels]
        if any(c >= len(names) for c in chosen):
            raise ValueError(f"--labels: class index out of range (K={len(names)})")
    else:
        chosen = list(range(len(names)))
    k = len(chosen)
    counts = [per_class] * k if per_class is not None else [n // k + (i < n % k) for i in range(k)]
    return np.repeat(np.asarray(chosen, dtype=np.int64), counts)


def sample_flows(
    model: GenerativeModule,
    labels: np.ndarray,
    seed: int = 0,
    batch_size: int = 1024,
    progress: bool = False,
    **options: Any,
) -> FlowBatch:
    """Sample `labels (N,)` in batches from one seeded generator; the batch on CPU.

    The same seed, labels and batch size give the same flows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    g = torch.Generator(device=model.device).manual_seed(int(seed))
    y = torch.as_tensor(labels, dtype=torch.long)
    parts = []
    starts = range(0, len(y), batch_size)
    for start in tqdm(starts, desc="sampling", unit="batch", disable=not progress):
        batch = model.sample(y[start : start + batch_size].to(model.device), g, **options)
        parts.append(batch.to("cpu"))
    return FlowBatch.cat(parts)


def to_table(model: GenerativeModule, batch: FlowBatch) -> FlowTable:
    """Decode a sampled batch to real units with the model's codec and class names."""
    return model.codec.decode(batch, tuple(model.class_names))


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option must be KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tsda sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="generator checkpoint (any GenerativeModule)")
    p.add_argument("--n", type=int, help="flows in all (class-balanced over the chosen classes)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--per-class", type=int, help="flows per class")
    how.add_argument("--class-balanced", action="store_true", help="spread --n evenly over classes (default)")
    p.add_argument("--labels", type=str, help="comma-separated class names (or indices) to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto")
    p.add_argument("--steps", type=int, help="generator option: sampling steps (diffusion)")
    p.add_argument("--sampler", type=str, help="generator option: diffusion sampler, ddpm, ddim or dpmpp (DPM-Solver++)")
    p.add_argument("--cfg-scale", type=float, help="generator option: classifier-free guidance scale")
    p.add_argument("--latent-guidance-scale", type=float, help="generator option: latent guidance scale")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other generator option (JSON value), e.g. --option latent_scale=0.8")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = load_generative(args.ckpt, map_location=device)
    labels = plan_labels(
        model.class_names, n=args.n, per_class=args.per_class,
        labels=[s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else None,
    )
    options: dict[str, Any] = {
        key: value for key, value in (("steps", args.steps), ("sampler", args.sampler),
                                      ("cfg_scale", args.cfg_scale),
                                      ("latent_guidance_scale", args.latent_guidance_scale))
        if value is not None
    }
    options.update(dict(_parse_option(o) for o in args.option))
    batch = sample_flows(model, labels, seed=args.seed, batch_size=args.batch_size,
                         progress=not args.no_progress, **options)
    table = to_table(model, batch)
    tag = f"{type(model).__name__}:{args.ckpt}"
    out = write_parquet(table, args.out, extra={"generator": np.full(len(table), tag, dtype=object)})
    counts = np.bincount(labels, minlength=len(model.class_names))
    print(f"wrote {len(table)} flows of {int((counts > 0).sum())} classes to {Path(out)}", flush=True)
