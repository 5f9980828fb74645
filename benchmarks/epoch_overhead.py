"""Seconds per epoch of `tsda fit` against a plain PyTorch loop on the same tensors.

    nice -n 10 python benchmarks/epoch_overhead.py [--data ../shared/data/fgnet/d1.parquet | synthetic]
        [--train-fraction 1.0] [--batch-size 512] [--epochs 3] [--repeats 1] [--device cpu|cuda|auto]
        [--precision 32-true|bf16-mixed] [--threads 1] [--wandb disabled|offline] [--no-plain] [--json OUT.json]
    python benchmarks/epoch_overhead.py --data synthetic --device cuda --precision bf16-mixed --no-plain

`tsda fit` is the real command (`tsda.commands.fit.run_fit`: LightningCLI, ClassifierModule
`cnn_resblock`, FlowDataModule with sampler `none`, CSV logger (plus W&B with `--wandb
offline`), progress bar, best.ckpt + last.ckpt, early stopping, validation every epoch),
run for 1 + `--epochs` epochs; a callback times epochs 2.. (from the start of the second
training epoch to the end of training, so every epoch's validation and checkpoint writes
count). The plain loop trains the same net (`build_classifier`, seeded alike) with Adam on
the same training tensors (the datamodule's, on the device), the same batch size and the
same batch order (the datamodule's `IndexBatchSampler`), and scores the validation split in
eval mode after every epoch (forward + argmax at `eval_batch_size`, as `tsda fit`'s
validation does): `--epochs` epochs timed after one warm-up epoch. Both exclude the one-off
startup (data load, model build, sanity check, first epoch, testing).

Both run in this process, alternately `--repeats` times, on `--threads` torch threads;
wall and CPU (process) seconds per epoch are printed with their ratios, so a shared
machine's other jobs affect both sides alike (CPU time is the steadier figure there).
Target: `tsda fit` at most 1.15x the plain loop.

Training throughput: the callback also times the training part of each timed epoch (its
first batch to the start of its validation, the device synchronised at both ends) and
counts its flows: `train flows/s` (validation, checkpoints and logging excluded), the
figure `benchmarks/gpu_check.sh` compares across devices and precisions. `--data
synthetic` trains on the embedded dataset (`--synthetic-scale` of MIRAGE19's size; no
download); `--precision` is the Trainer's (the plain loop runs under the matching
autocast); `--no-plain` times `tsda fit` alone; `--json` writes every figure to a file.

Measured (2-core CPU shared with two training jobs, all of D1 = 106,065 training flows,
`--epochs 2 --wandb offline`, 1 thread): before the lean step 28.67 vs 25.90 CPU s/epoch
(ratio 1.107; wall 1.111), after it 28.81 vs 27.59 (1.044; wall 1.052). The profile's
difference was validation: in deterministic mode torchmetrics counts classes with an
(N, K*K) comparison (0.14 s per batch of 2048 at K = 53, ~1 s per epoch), now
`torch.bincount` (`tsda.classifier.module.native_bincount`); and `self.log("train_loss")`
on every step (~2 ms each), now one call per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from tsda.classifier.nets import build_classifier
from tsda.commands.options import resolve_device
from tsda.data.batch import FlowBatch
from tsda.data.datamodule import FlowDataModule
from tsda.seeds import seeded_init

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "fgnet" / "d1.parquet"
SEED = 0


def _sync(module: L.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class EpochTimer(L.Callback):
    """Wall and CPU clocks at every training epoch's start and at the end of training, and
    each epoch's training part: (wall seconds, flows) from its start to its validation."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []
        self.end: tuple[float, float] | None = None
        self.train_parts: list[tuple[float, int]] = []
        self._flows = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self._flows = 0
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: FlowBatch, batch_idx: int
    ) -> None:
        self._flows += len(batch)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or len(self.train_parts) >= len(self.starts):
            return
        _sync(pl_module)
        self.train_parts.append((time.perf_counter() - self.starts[-1][0], self._flows))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self.end = (time.perf_counter(), time.process_time())

    def train_flows_per_second(self) -> float:
        """Training flows per wall second over the timed epochs (the first one is warm-up)."""
        parts = self.train_parts[1:] or self.train_parts
        return sum(n for _, n in parts) / max(sum(s for s, _ in parts), 1e-9)


def data_args(args: argparse.Namespace) -> list[str]:
    """The `--data.*` options of `--data`: a Parquet file, or `synthetic` (the embedded dataset)."""
    if str(args.data) == "synthetic":
        return ["--data.synthetic_scale", str(args.synthetic_scale)]
    return ["--data.path", str(args.data), "--data.invalid_rows", "drop"]


def time_fit(args: argparse.Namespace, run_dir: Path) -> tuple[tuple[float, float], float, FlowDataModule]:
    """(wall, CPU) seconds per epoch of `tsda fit` after its first epoch, its training
    flows per second (`EpochTimer.train_flows_per_second`), and its datamodule."""
    from tsda.commands.fit import run_fit

    os.environ["WANDB_MODE"] = args.wandb
    cli = run_fit(
        [
            "--model",
            "tsda.classifier.module.ClassifierModule",
            *data_args(args),
            "--data.batch_size",
            str(args.batch_size),
            "--data.train_fraction",
            str(args.train_fraction),
            "--trainer.max_epochs",
            str(args.epochs + 1),
            "--trainer.accelerator",
            "gpu" if args.device.type == "cuda" else "cpu",
            "--trainer.devices",
            f"[{args.device.index}]" if args.device.index is not None else "1",
            "--trainer.precision",
            args.precision,
            "--patience",
            str(args.epochs + 10),
            "--latent_plot",
            "false",
            "--model.init_args.latent_points",
            "0",  # testing is not timed: no latent scores
            "--seed_everything",
            str(SEED),
            "--run_dir",
            str(run_dir),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.callbacks+=__main__.EpochTimer",
        ]
    )
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, EpochTimer))
    if timer.end is None or len(timer.starts) != args.epochs + 1:
        raise RuntimeError(f"tsda fit ran {len(timer.starts)} epochs, expected {args.epochs + 1}")
    first = timer.starts[1]
    per_epoch = ((timer.end[0] - first[0]) / args.epochs, (timer.end[1] - first[1]) / args.epochs)
    return per_epoch, timer.train_flows_per_second(), cli.datamodule


def time_plain(args: argparse.Namespace, dm: FlowDataModule) -> tuple[float, float]:
    """(wall, CPU) seconds per epoch of the plain loop after one warm-up epoch."""
    device = args.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    train, val = dm.tensors["train"].to(device), dm.tensors["val"].to(device)
    sampler = dm.train_dataloader().sampler  # the same IndexBatchSampler (seed, batch size)
    val_sampler = dm.val_dataloader().sampler
    with seeded_init(SEED):
        net = build_classifier("cnn_resblock", dm.num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def epoch(e: int) -> None:
        sampler.set_epoch(e)
        net.train()
        for idx in sampler:
            b: FlowBatch = train.index(idx.to(device))
            with autocast:
                loss = F.cross_entropy(net(b.x), b.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        correct = torch.zeros((), device=device)
        with torch.inference_mode():
            for idx in val_sampler:
                b = val.index(idx.to(device))
                with autocast:
                    correct += (net(b.x).argmax(dim=1) == b.labels).sum()
        float(correct)  # one sync per epoch, as early stopping needs a score

    epoch(0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    for e in range(1, args.epochs + 1):
        epoch(e)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - wall) / args.epochs, (time.process_time() - cpu) / args.epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="FG-Net D1 Parquet file, or 'synthetic' (the embedded dataset, no download)",
    )
    p.add_argument(
        "--synthetic-scale",
        type=float,
        default=1.0,
        help="--data synthetic: fraction of MIRAGE19's size (1.0 = 64k flows)",
    )
    p.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="--data.train_fraction: class-stratified fraction of the training split",
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--repeats", type=int, default=1, help="alternate fit / plain this many times")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when present)")
    p.add_argument(
        "--precision",
        choices=("32-true", "bf16-mixed"),
        default="32-true",
        help="the Trainer's precision (the plain loop: the matching autocast)",
    )
    p.add_argument("--no-plain", action="store_true", help="time tsda fit alone (no plain loop)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, default=1, help="torch threads (both sides; 0 = torch's default)")
    p.add_argument(
        "--wandb",
        choices=("disabled", "offline"),
        default="disabled",
        help="W&B mode of the tsda fit run (offline: also W&B logging)",
    )
    args = p.parse_args()
    if str(args.data) != "synthetic" and not args.data.is_file():
        p.error(f"{args.data}: no such file")
    try:
        args.device = resolve_device(args.device)
    except ValueError as exc:
        p.error(str(exc))
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    fits: list[tuple[float, float]] = []
    plains: list[tuple[float, float]] = []
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            fit, rate, dm = time_fit(args, Path(tmp) / f"run{r}")
            fits.append(fit)
            rates.append(rate)
            line = f"repeat {r}: tsda fit {fit[0]:.2f} s/epoch wall, {fit[1]:.2f} CPU, {rate:,.0f} train flows/s"
            if not args.no_plain:
                plains.append(time_plain(args, dm))
                line += f"; plain {plains[-1][0]:.2f} wall, {plains[-1][1]:.2f} CPU"
            print(line, flush=True)

    n_train = len(dm.tensors["train"])
    result = {
        "device": str(args.device),
        "precision": args.precision,
        "data": str(args.data),
        "n_train": n_train,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else None,
        "fit_wall_s_per_epoch": statistics.median(x[0] for x in fits),
        "fit_cpu_s_per_epoch": statistics.median(x[1] for x in fits),
        "train_flows_per_s": statistics.median(rates),
    }
    print(
        f"\n{n_train} training flows, batch {args.batch_size}, {args.epochs} timed epochs x "
        f"{args.repeats} repeats, device {args.device}, precision {args.precision}, "
        f"{torch.get_num_threads()} thread(s), W&B {args.wandb}; "
        "startup (data load, model build, sanity check, first epoch, testing) excluded"
    )
    print(f"train flows/s (training part of each timed epoch): tsda fit {result['train_flows_per_s']:,.0f}")
    for i, clock in enumerate(("wall", "CPU")):
        f = statistics.median(x[i] for x in fits)
        if not plains:
            print(f"{clock:>4} s/epoch: tsda fit {f:.3f}")
            continue
        q = statistics.median(x[i] for x in plains)
        result[f"plain_{clock.lower()}_s_per_epoch"] = q
        print(f"{clock:>4} s/epoch: tsda fit {f:.3f}, plain loop {q:.3f}, ratio {f / q:.3f} (target <= 1.15)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
