"""Training-step cost of the generator augmentation against no augmentation and Translation.

    python benchmarks/generator_step_cost.py [--threads 2] [--steps 30] [--pool-per-class 200] [--device cpu|cuda|auto]
    python benchmarks/generator_step_cost.py --cgan runs/gen/cgan/checkpoints/last.ckpt \\
        --diffusion runs/gen/diffusion/checkpoints/last.ckpt

One `ClassifierModule` optimiser step (augmentation policy, forward, cross-entropy,
backward, Adam) on batches of B = 256 valid random flows of K = 53 classes (FG-Net D1's
shape), timed as the median of `--steps` steps after warm-up, for:

- `no_aug`             batch B, no augmentation (and `no_aug_2B`: batch 2B, the paper's
                       No Aug reference, same flows per step as `double`);
- `translation`        policy `double` (B originals + B translated copies);
- `cgan_fresh`         policy `double`, a cGAN sampling B fresh flows every step;
- `diffusion_pool`     policy `double`, B draws from a class-balanced pool; the pool's
                       one-off sampling time (DPM-Solver++ 10 steps, classifier-free
                       guidance 2) is printed apart and amortised over a run of
                       `--run-steps` steps (default 42 x 30: 30 epochs of D1 10 % at B = 256;
                       the campaign's runs trained 18-56 epochs);
- `diffusion_fresh`    policy `double`, DPM-Solver++ 10 for every batch (what a pool avoids).

The cost of a step does not depend on the generator's weights: without checkpoints the
generators are untrained modules of the shipped configs' sizes. Ratios are taken in this
one run, so a shared machine affects every row alike. `--device cuda` runs the steps (and
the generators) on the GPU, each timed step ending with a device synchronisation.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from tsda.augment.base import Augmentation
from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.order import Translation
from tsda.classifier.module import ClassifierModule
from tsda.commands.options import resolve_device
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.generators.base import GenerativeModule, prepare_augmentation
from tsda.generators.diffusion.module import DiffusionModule
from tsda.generators.gan.module import GANModule

K, B = 53, 256
NAMES = [str(i) for i in range(K)]


def random_batch(n: int, seed: int) -> FlowBatch:
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(n, 3, 20, generator=g) * 2 - 1
    raw[:, 1, :11] = torch.where(raw[:, 1, :11] >= 0, 1.0, -1.0)  # at least 11 packets
    labels = torch.randint(0, K, (n,), generator=g)
    return FlowCodec().snap(raw).replace(labels=labels)


def untrained_checkpoint(module: GenerativeModule, root: Path, name: str) -> str:
    """Save an untrained module as a Lightning checkpoint (cost does not depend on weights)."""
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=0,
    )
    trainer.strategy.connect(module)
    path = root / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def step_seconds(
    augmentation: Augmentation | None, batch_size: int, steps: int, warmup: int = 3, device: torch.device | None = None
) -> float:
    """Median seconds of one optimiser step of a fresh ClassifierModule on `device` (default: the CPU)."""
    device = device if device is not None else torch.device("cpu")
    torch.manual_seed(0)
    module = ClassifierModule(
        num_classes=K, class_names=NAMES, augmentation=augmentation, policy="double", latent_points=0
    ).to(device)
    if augmentation is not None:
        prepare_augmentation(
            augmentation, device=device, class_names=NAMES, generator=module.augmentation_generator(), codec=FlowCodec()
        )
    optimizer = module.configure_optimizers()
    batches = [random_batch(batch_size, seed).to(device) for seed in range(4)]
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        train = module.training_batch(batches[i % len(batches)])
        loss = module.loss(module(train.x), train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cgan", help="a cGAN checkpoint (default: untrained fgnet_cgan.yaml-sized module)")
    parser.add_argument("--diffusion", help="a diffusion checkpoint (default: untrained, fgnet_diffusion.yaml size)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per condition")
    parser.add_argument("--run-steps", type=int, default=42 * 30, help="steps of a run to amortise the pool over")
    parser.add_argument("--pool-per-class", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when present)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cgan = args.cgan or untrained_checkpoint(
            GANModule(num_classes=K, class_names=NAMES, noise_dim=64, width=64, depth=3, disc_width=64, w_recon=10.0),
            root,
            "cgan",
        )
        diffusion = args.diffusion or untrained_checkpoint(
            DiffusionModule(num_classes=K, class_names=NAMES, block_out_channels=(32, 64, 128)), root, "diffusion"
        )
        dpmpp = {"sampler": "dpmpp", "steps": 10, "cfg_scale": 2.0}
        pool = GeneratorAugmentation(diffusion, pool_per_class=args.pool_per_class, options=dpmpp, progress=False)
        rows = {
            "no_aug": step_seconds(None, B, args.steps, device=device),
            "no_aug_2B": step_seconds(None, 2 * B, args.steps, device=device),
            "translation": step_seconds(Translation(), B, args.steps, device=device),
            "cgan_fresh": step_seconds(GeneratorAugmentation(cgan, progress=False), B, args.steps, device=device),
            "diffusion_pool": step_seconds(pool, B, args.steps, device=device),
            "diffusion_fresh": step_seconds(
                GeneratorAugmentation(diffusion, options=dpmpp, progress=False),
                B,
                max(3, args.steps // 10),
                warmup=1,
                device=device,
            ),
        }
    pool_seconds = pool.stats()["pool_seconds"]
    rows["diffusion_pool+fill"] = rows["diffusion_pool"] + pool_seconds / args.run_steps
    print(
        f"device {device}, threads {torch.get_num_threads()}, B={B}, K={K}, L=20; pool {K * args.pool_per_class} flows "
        f"filled in {pool_seconds:.1f} s (DPM-Solver++ 10, cfg 2)"
    )
    print(f"{'condition':<22} {'ms/step':>9} {'x no_aug':>9} {'x no_aug_2B':>12} {'x translation':>14}")
    for name, sec in rows.items():
        print(
            f"{name:<22} {1e3 * sec:>9.1f} {sec / rows['no_aug']:>9.2f} {sec / rows['no_aug_2B']:>12.2f} "
            f"{sec / rows['translation']:>14.2f}"
        )
    print(f"(diffusion_pool+fill: the pool's fill time spread over a run of {args.run_steps} steps)")


if __name__ == "__main__":
    main()
