"""Variation throughput (flows per second) of trained generators, per family and strength,
and what a variation pool of K variations of every training flow costs.

    python benchmarks/variation_throughput.py \\
        --ckpt diffusion=runs/vargen/diffusion/checkpoints/last.ckpt \\
        --ckpt transformer=runs/vargen/transformer/checkpoints/last.ckpt \\
        --ckpt cgan=runs/vargen/cgan/checkpoints/last.ckpt [--strengths 0.25 0.5 1.0] \\
        [--flows 2048] [--k 4] [--threads 2] [--device cpu]

The flows varied are the first `--flows` of the 10 % D1 training split of
`experiments/handcrafted/base.yaml` (`--data`, `--train-fraction`); each family runs with the
options of `experiments/variations/campaign.yaml` (`FAMILY_OPTIONS`). Each cell: one warm-up
batch, then every batch of `--batch-size` timed once. The pool column projects the seconds of
`--k` variations of every training flow (the issue's target: K = 4 at strength 0.5 in at most
120 s on 2 CPU cores), i.e. what `GeneratorAugmentation(mode=vary, variations_per_flow=K)`
spends at fit start.
"""

from __future__ import annotations

import argparse
import time

import torch

from tsda.commands.fit import build_fit
from tsda.commands.options import resolve_device
from tsda.data.batch import FlowBatch
from tsda.generators.base import load_generative

#: the options each family varies with in experiments/variations (keep in step with it)
FAMILY_OPTIONS: dict[str, dict[str, object]] = {
    "diffusion": {"sampler": "dpmpp", "steps": 10},
    "transformer": {"how": "continuation", "temperature": 0.9},
    "cgan": {},
}


def time_vary(
    module: torch.nn.Module, flows: FlowBatch, strength: float, batch_size: int, options: dict[str, object]
) -> float:
    """Flows per second of `module.vary` over `flows` in batches of `batch_size`."""
    g = torch.Generator(module.device).manual_seed(0)
    module.vary(flows.index(torch.arange(min(batch_size, len(flows)))), strength, g, **options)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(flows), batch_size):
        module.vary(flows.index(torch.arange(i, min(i + batch_size, len(flows)))), strength, g, **options)
    return len(flows) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt",
        action="append",
        required=True,
        help="FAMILY=PATH (family: diffusion, transformer or cgan, which picks its options)",
    )
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--flows", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default="../shared/data/fgnet/d1.parquet")
    parser.add_argument("--train-fraction", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    _, dm, _, _ = build_fit(
        [
            "-c",
            "experiments/handcrafted/base.yaml",
            "--data.path",
            args.data,
            "--data.train_fraction",
            str(args.train_fraction),
        ]
    )
    dm.setup("fit")
    train = dm.tensors["train"]
    flows = train.index(torch.arange(min(args.flows, len(train)))).to(device)
    print(f"{len(flows)} flows varied of {len(train)} training flows; {args.threads} threads on {device}")
    print(f"| family | strength | flows/s | pool s (K = {args.k:d} x {len(train):d} flows) |")
    print("|---|---|---|---|")
    for spec in args.ckpt:
        family, path = spec.split("=", 1)
        module = load_generative(path, map_location=device)
        for s in args.strengths:
            rate = time_vary(module, flows, s, args.batch_size, FAMILY_OPTIONS[family])
            print(f"| {family} | {s} | {rate:,.0f} | {args.k * len(train) / rate:,.1f} |", flush=True)


if __name__ == "__main__":
    main()
