"""One training step of the 1D-CNN (`cnn_resblock`, K = 53, L = 20) in each CPU speed mode.

    python benchmarks/train_step_modes.py [--batch-size 512] [--threads 1] [--rounds 6]

Modes: `fp32` (eager, foreach Adam: what `tsda fit` runs by default), `bf16` (bf16 autocast:
`--trainer.precision bf16-mixed`), `fp32_fused` (fused Adam alone), `compile_bf16` (compiled
forward under bf16 autocast, foreach Adam), `compile_bf16_fused` (the same with fused Adam),
`compile_bf16_fused_cl` (and the convolutions channels-last: what `tsda fit --compile true
--trainer.precision bf16-mixed` runs, `ClassifierModule.compile_networks`), `bf16_cl` (eager
bf16, channels-last). Each mode
has its own net (same seed) and its warm-up steps (compilation included there); the timed
rounds of 10 steps alternate between modes, so a shared machine's other jobs affect all alike;
the best round of each mode is printed with its speed-up over `fp32`. The inductor cache
makes a second run's compilation seconds short.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from tsda.classifier.nets import build_classifier

MODES = ("fp32", "bf16", "fp32_fused", "compile_bf16", "compile_bf16_fused", "compile_bf16_fused_cl", "bf16_cl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 20, generator=g)
    y = torch.randint(0, 53, (args.batch_size,), generator=g)
    steps = {}
    for mode in MODES:
        torch.manual_seed(0)
        net = build_classifier("cnn_resblock", 53)
        if mode.endswith("_cl"):
            net.use_channels_last()  # type: ignore[operator]
        opt = torch.optim.Adam(net.parameters(), 1e-3, fused=True if "fused" in mode else None)
        forward = torch.compile(net.forward, dynamic=False) if "compile" in mode else net.forward

        def step(net=net, opt=opt, forward=forward, bf16="bf16" in mode) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(forward(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        started = time.perf_counter()
        for _ in range(5):
            step()
        print(f"{mode:20s} warm-up (5 steps, compilation included): {time.perf_counter() - started:5.1f} s")
        steps[mode] = step
    best = dict.fromkeys(MODES, float("inf"))
    for _ in range(args.rounds):
        for mode, step in steps.items():
            started = time.perf_counter()
            for _ in range(10):
                step()
            best[mode] = min(best[mode], (time.perf_counter() - started) / 10)
    print(f"\nbatch {args.batch_size}, {args.threads} thread(s); best of {args.rounds} rounds of 10 steps")
    for mode in MODES:
        print(f"{mode:20s} {1000 * best[mode]:6.1f} ms  {best['fp32'] / best[mode]:.2f}x")


if __name__ == "__main__":
    main()
