"""Sampling throughput (flows per second) of the generators, through `GenerativeModule.sample`.

    python benchmarks/sampling_throughput.py                     # full table (slow on CPU)
    python benchmarks/sampling_throughput.py --device cuda       # on a GPU
    python benchmarks/sampling_throughput.py --batch-sizes 256 1024 --max-steps-timed 20 \\
        --threads 1                                              # a few minutes on CPU

Untrained modules of the default size (`DiffusionModule()`: UNet (32, 64, 128), about 1M
parameters; `GANModule()`; `TransformerModule()`, its packet vocabulary fitted to random
valid flows, sampling packet by packet with its key/value cache) with K classes and L
packets: throughput does not depend on the weights. Diffusion settings: DPM-Solver++ 10, DDIM
10/25/50 and DDPM 1000 steps, `cfg_scale` 1 (one denoiser pass per step; classifier-free guidance doubles
the batch each step). Each cell is the best of `--repeats` timed calls after one warm-up
call. With `--max-steps-timed N`, a setting with more than N steps is timed on N steps
and scaled linearly to its step count (the cost of a step does not depend on how many
there are); such rows are marked `extrapolated`. The last lines print, for each setting,
the seconds a generator-augmentation pool of `--pool-per-class` flows for each of the K
classes would take at the largest batch size (the target: 200 x 53 = 10,600 flows in at
most 60 s on 2 CPU cores), and DPM-Solver++ 10's speed-up over DDIM 25 as a ratio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tsda.commands.options import resolve_device
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.generators.base import GenerativeModule
from tsda.generators.diffusion.module import DiffusionModule
from tsda.generators.gan.module import GANModule
from tsda.generators.transformer.module import TransformerModule


@dataclass(frozen=True)
class Setting:
    """One generator configuration to time."""

    generator: str
    name: str
    build: Callable[[], GenerativeModule]
    options: dict[str, Any]
    steps: int = 1  # sampling steps (1 for one-shot generators)


def settings(num_classes: int, n_packets: int, cfg_scale: float) -> list[Setting]:
    def diffusion() -> GenerativeModule:
        return DiffusionModule(num_classes=num_classes, n_packets=n_packets)

    def gan() -> GenerativeModule:
        return GANModule(num_classes=num_classes, n_packets=n_packets)

    def transformer() -> GenerativeModule:
        module = TransformerModule(num_classes=num_classes, n_packets=n_packets)
        module.fit_vocabulary([random_flows(4096, num_classes, n_packets)])
        return module

    return [
        Setting("cgan", "one pass", gan, {}),
        Setting("transformer", f"{n_packets} packets", transformer, {}),
        *(
            Setting(
                "diffusion",
                f"{sampler.upper()} {steps}",
                diffusion,
                {"sampler": sampler, "steps": steps, "cfg_scale": cfg_scale},
                steps,
            )
            for sampler, steps in (("dpmpp", 10), ("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", 1000))
        ),
    ]


def random_flows(n: int, num_classes: int, n_packets: int, seed: int = 0) -> FlowBatch:
    """`n` valid random flows of L packets (at least half of them real), for fitting a vocabulary."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(n, 3, n_packets, generator=g) * 2 - 1
    half = max(1, n_packets // 2)
    raw[:, 1, :half] = torch.where(raw[:, 1, :half] >= 0, 1.0, -1.0)
    return FlowCodec(n_packets=n_packets).snap(raw).replace(labels=torch.randint(0, num_classes, (n,), generator=g))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_sample(
    module: GenerativeModule, batch: int, options: dict[str, Any], device: torch.device, repeats: int
) -> float:
    """Best wall-clock seconds of `module.sample` for `batch` flows (after a warm-up)."""
    labels = torch.arange(batch, device=device) % int(module.hparams.num_classes)  # (B,)
    generator = torch.Generator(device=device).manual_seed(0)
    module.sample(labels[: min(batch, 64)], generator, **options)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        module.sample(labels, generator, **options)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = args.device
    rows = []
    for setting in settings(args.num_classes, args.n_packets, args.cfg_scale):
        if (args.only and setting.generator not in args.only) or (args.settings and setting.name not in args.settings):
            continue
        module = setting.build().to(device).eval()
        timed_steps = setting.steps
        options = dict(setting.options)
        if args.max_steps_timed and setting.steps > args.max_steps_timed:
            timed_steps = args.max_steps_timed
            options["steps"] = timed_steps
        for batch in args.batch_sizes:
            seconds = time_sample(module, batch, options, device, args.repeats) * setting.steps / timed_steps
            rows.append(
                {
                    "generator": setting.generator,
                    "setting": setting.name,
                    "batch": batch,
                    "seconds": seconds,
                    "flows_per_s": batch / seconds,
                    "note": f"extrapolated from {timed_steps} steps" if timed_steps != setting.steps else "",
                }
            )
            print(_format_row(rows[-1]), flush=True)
    return rows


HEADER = f"{'generator':<12} {'setting':<10} {'batch':>6} {'seconds':>10} {'flows/s':>12}  note"


def _format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['generator']:<12} {row['setting']:<10} {row['batch']:>6} {row['seconds']:>10.3f} "
        f"{row['flows_per_s']:>12.1f}  {row['note']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when present)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096, 8192])
    parser.add_argument("--num-classes", type=int, default=53, help="K (FG-Net D1 has 53 apps)")
    parser.add_argument("--n-packets", type=int, default=20, help="L")
    parser.add_argument("--cfg-scale", type=float, default=1.0, help="!= 1 doubles the denoiser batch")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--max-steps-timed",
        type=int,
        default=0,
        help="time at most this many steps and scale linearly (0 = time every step)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--only", nargs="*", default=None, help="generators to time (cgan, transformer, diffusion)")
    parser.add_argument(
        "--settings", nargs="*", default=None, help="settings to time by name, e.g. 'DPMPP 10' 'DDIM 25' (default: all)"
    )
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--pool-per-class", type=int, default=200, help="pool size per class to project")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.max_steps_timed < 0:
        raise ValueError("--batch-sizes and --repeats must be >= 1, --max-steps-timed >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # weight initialisation of the untrained modules
    print(
        f"device {args.device}, threads {torch.get_num_threads()}, K={args.num_classes}, "
        f"L={args.n_packets}, cfg_scale={args.cfg_scale}"
    )
    print(HEADER)
    rows = run(args)
    print(pool_summary(rows, args.pool_per_class * args.num_classes))
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": str(args.device),
                    "num_classes": args.num_classes,
                    "n_packets": args.n_packets,
                    "rows": rows,
                },
                indent=1,
            )
        )


def pool_summary(rows: list[dict[str, Any]], pool_flows: int) -> str:
    """Seconds to sample a pool of `pool_flows` at each setting's largest timed batch, and
    DPM-Solver++ 10 against DDIM 25 (same run, same batch) as a ratio."""
    largest = max(r["batch"] for r in rows)
    at = {(r["generator"], r["setting"]): r for r in rows if r["batch"] == largest}
    lines = [f"pool of {pool_flows} flows at batch {largest}:"]
    for (generator, setting), r in at.items():
        lines.append(f"  {generator:<12} {setting:<10} {pool_flows / r['flows_per_s']:>9.1f} s")
    fast, ref = at.get(("diffusion", "DPMPP 10")), at.get(("diffusion", "DDIM 25"))
    if fast and ref:
        lines.append(f"DPM-Solver++ 10 / DDIM 25 throughput: {fast['flows_per_s'] / ref['flows_per_s']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
