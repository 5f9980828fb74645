"""`tsda sample`: draw flows from any trained generator checkpoint into a Parquet file.

    tsda sample --ckpt runs/fgnet_cgan/checkpoints/last.ckpt --per-class 500 --seed 0 \\
        --out runs/fgnet_cgan/synthetic.parquet
    tsda sample --ckpt CKPT --n 10000 --seed 1 --out FILE.parquet      # spread evenly over classes
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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsda.data.sources import write_parquet
from tsda.generate import plan_labels, sample_flows, to_table
from tsda.lit.generative import load_generative


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
    p.add_argument("--n", type=int, help="flows in all, spread evenly over the chosen classes")
    p.add_argument("--per-class", type=int, help="flows per class (instead of --n)")
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
