"""Throughput of every augmentation: batched torch vs a per-sample NumPy loop.

    nice -n 10 python benchmarks/augment_throughput.py [--flows 4096] [--packets 20] [--threads 1] [--device cpu]

Each NumPy function is a straightforward per-flow version of the same rule, written the
way tsaug / tcbench-style code does it (a Python loop over samples, NumPy inside one
flow); both run on one CPU thread by default. Flows per second come from the fewest
CPU seconds (process time, so a shared machine's other jobs do not count) of
`--repeats` runs (NumPy: `--numpy-repeats`) on one batch of random flows.
Target: torch at least 20x NumPy for every augmentation.

Then the policies (`configs/augment/trivial_augment.yaml`, `rand_augment.yaml`, and
TrivialAugment at 11 and 31 magnitude levels): the CPU seconds of a training step
(augment B flows, policy double, forward and backward of the study's classifier on 2B,
Adam) with the policy against the step with its slowest single op (`--policies-only`
skips the table above). Target: at most 1.2x.

`--device cuda` (or `auto`) runs the torch side (the ops and the policy steps) on the GPU
and times it in wall seconds, the device synchronised after each call; the NumPy loop
stays on the CPU (CPU seconds), so its ratios compare a GPU with one CPU thread.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tsda.augment.base import Augmentation
from tsda.augment.catalog import HANDCRAFTED, build_augmentation
from tsda.augment.policy import TrivialAugment
from tsda.commands.options import resolve_device
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec

CODEC = FlowCodec()
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "augment"
NORM = float(np.log1p(CODEC.iat_max / CODEC.iat_unit))
Flow = tuple[np.ndarray, np.ndarray, np.ndarray]  # size, direction, iat of the n real packets


class Context:
    """What per-sample functions may need beyond their own flow (mixing partners)."""

    def __init__(self, x: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> None:
        self.x, self.lengths, self.labels = x, lengths, labels
        self.by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}

    def flow(self, i: int) -> Flow:
        n = self.lengths[i]
        return self.x[i, 0, :n].copy(), self.x[i, 1, :n].copy(), self.x[i, 2, :n].copy()

    def partner(self, i: int, rng: np.random.Generator) -> int:
        same = self.by_class[self.labels[i]]
        return int(rng.choice(same)) if len(same) > 1 else i


# -- per-sample NumPy versions ---------------------------------------------------------------


def _values(
    f: Flow, rng: np.random.Generator, change: Callable[[np.ndarray], np.ndarray], p_size=0.5, p_iat=0.5
) -> Flow:
    s, d, t = f
    if rng.random() < p_size:
        s = np.clip(change(s), 0, 1)
    if rng.random() < p_iat:
        t = np.maximum(change(t), 0)
        t[0] = 0
    return s, d, t


def np_gaussian_noise(f, rng, ctx, i):
    return _values(f, rng, lambda v: v + rng.normal(0, 0.05, len(v)))


def np_spike_noise(f, rng, ctx, i):
    def spike(v):
        v = v.copy()
        nz = np.flatnonzero(v)
        k = min(rng.integers(1, 4), len(nz))
        idx = rng.choice(nz, k, replace=False)
        v[idx] += np.abs(rng.normal(0, 0.2, k))
        return v

    return _values(f, rng, spike)


def np_gaussian_wrapup(f, rng, ctx, i):
    n = len(f[0])
    return _values(
        f,
        rng,
        lambda v: v * (1 + rng.uniform(-0.3, 0.3) * np.exp(-0.5 * ((np.arange(n) - rng.uniform(0, n)) / 3.0) ** 2)),
    )


def np_sine_wrapup(f, rng, ctx, i):
    n = len(f[0])
    return _values(
        f,
        rng,
        lambda v: (
            v
            * (
                1
                + rng.uniform(0, 0.3)
                * np.sin(2 * np.pi * rng.uniform(0.5, 2) * np.arange(n) / 20 + rng.uniform(0, 2 * np.pi))
            )
        ),
    )


def np_constant_wrapup(f, rng, ctx, i):
    return _values(f, rng, lambda v: v * rng.uniform(0.8, 1.2), p_size=0.0, p_iat=1.0)


def _zero(f: Flow, where: np.ndarray) -> Flow:
    s, d, t = (a.copy() for a in f)
    s[where[0]], d[where[1]], t[where[2]] = 0, 1, 0
    return s, d, t


def np_bernoulli_mask(f, rng, ctx, i):
    return _zero(f, rng.random((3, len(f[0]))) < 0.1)


def np_window_mask(f, rng, ctx, i):
    n = len(f[0])
    start = rng.integers(0, max(n - 2, 0) + 1)
    where = np.zeros((3, n), bool)
    where[:, start : start + 2] = True
    return _zero(f, where)


def _interleave(f: Flow) -> Flow:
    s, d, t = f
    n = len(s)
    out = [np.zeros(2 * n - 1) for _ in range(3)]
    for o, v in zip(out, (s, d, t)):
        o[0::2] = v
        o[1::2] = (v[:-1] + v[1:]) / 2
    out[1][1::2] = d[:-1]
    return tuple(out)


def np_interpolation(f, rng, ctx, i):
    ext = _interleave(f)
    start = rng.integers(0, max(len(ext[0]) - 20, 0) + 1)
    return tuple(v[start : start + 20] for v in ext)


def np_flip(f, rng, ctx, i):
    s, d, t = f
    return s[::-1].copy(), d[::-1].copy(), np.concatenate([[0.0], t[1:][::-1]])


def _drop_in_time(f: Flow, drop: np.ndarray) -> Flow:
    s, d, t = f
    times = np.cumsum(np.expm1(t * NORM) * CODEC.iat_unit)
    keep = ~drop
    if not keep.any():
        return f
    kept = times[keep]
    gaps = np.diff(kept, prepend=kept[0])
    return s[keep], d[keep], np.log1p(gaps / CODEC.iat_unit) / NORM


def _times(f: Flow) -> np.ndarray:
    return np.cumsum(np.expm1(f[2] * NORM) * CODEC.iat_unit)


def np_packet_loss(f, rng, ctx, i):
    times = _times(f)
    t0 = rng.uniform(0, times[-1])
    return _drop_in_time(f, (times >= t0) & (times <= t0 + 0.05))


def np_translation(f, rng, ctx, i):
    s, d, t = f
    n, k = len(s), rng.integers(1, 5)
    if rng.random() < 0.5:  # right: k zero packets first
        pad = (np.zeros(k), np.ones(k), np.zeros(k))
        return tuple(np.concatenate([p, v])[:20] for p, v in zip(pad, (s, d, t)))
    k = min(k, n - 1)
    return s[k:], d[k:], t[k:]


def np_wrap(f, rng, ctx, i):
    s, d, t = f
    n = len(s)
    out: list[list[float]] = [[], [], []]
    for j in range(n):
        u = rng.random()
        if u < 0.1 and j > 0:
            continue
        for o, v in zip(out, (s[j], d[j], t[j])):
            o.append(v)
        if 0.1 <= u < 0.2 and j + 1 < n:
            out[0].append((s[j] + s[j + 1]) / 2)
            out[1].append(d[j])
            out[2].append((t[j] + t[j + 1]) / 2)
    return tuple(np.array(o[:20]) for o in out)


def np_permutation(f, rng, ctx, i):
    n = len(f[0])
    cuts = np.sort(rng.choice(np.arange(1, n), min(3, n - 1), replace=False)) if n > 1 else np.array([], int)
    segments = np.split(np.arange(n), cuts)
    order = np.concatenate([segments[j] for j in rng.permutation(len(segments))])
    return tuple(v[order] for v in f)


def np_cutmix(f, rng, ctx, i):
    other = ctx.flow(ctx.partner(i, rng))
    m = min(len(f[0]), len(other[0]))
    w_max = int(m * 0.5)
    if w_max < 1:
        return f
    w = rng.integers(1, w_max + 1)
    start = rng.integers(0, m - w + 1)
    out = tuple(v.copy() for v in f)
    for o, v in zip(out, other):
        o[start : start + w] = v[start : start + w]
    return out


def np_change_rtt(f, rng, ctx, i):
    s, d, t = f
    gaps = np.expm1(t * NORM) * CODEC.iat_unit * rng.uniform(0.5, 1.5)
    return s, d, np.log1p(gaps / CODEC.iat_unit) / NORM


def np_time_shift(f, rng, ctx, i):
    return _drop_in_time(f, _times(f) + rng.uniform(-1, 1) < 0)


def np_tcbench_packet_loss(f, rng, ctx, i):
    times = _times(f)
    return _drop_in_time(f, np.abs(times - rng.uniform(0, times[-1])) <= 0.1)


def np_mixup(f, rng, ctx, i):
    other = ctx.flow(ctx.partner(i, rng))
    lam = rng.beta(0.2, 0.2)
    lam = max(lam, 1 - lam)
    m = min(len(f[0]), len(other[0]))
    s, d, t = (v.copy() for v in f)
    s[:m] = lam * s[:m] + (1 - lam) * other[0][:m]
    t[:m] = lam * t[:m] + (1 - lam) * other[2][:m]
    return s, d, t


NUMPY: dict[str, Callable] = {name: globals()[f"np_{name}"] for name in HANDCRAFTED}


def run_numpy(fn: Callable, ctx: Context, rng: np.random.Generator) -> np.ndarray:
    """The per-sample loop: `(B, 3, L)` output."""
    out = np.zeros_like(ctx.x)
    for i in range(len(ctx.lengths)):
        s, d, t = fn(ctx.flow(i), rng, ctx, i)
        n = min(len(s), out.shape[2])
        out[i, 0, :n], out[i, 1, :n], out[i, 2, :n] = s[:n], d[:n], t[:n]
    return out


def random_batch(b: int, length: int, seed: int = 0) -> FlowBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, b)
    sizes = rng.integers(1, 1461, (b, length)).astype(float)
    dirs = rng.integers(0, 2, (b, length))
    gaps = rng.exponential(0.05, (b, length))
    gaps[:, 0] = 0.0
    x, ln = FlowCodec(n_packets=length).encode_arrays(sizes, dirs, np.cumsum(gaps, 1), lengths)
    return FlowBatch(x, ln, torch.from_numpy(rng.integers(0, 20, b)))


#: where the torch side runs (`--device`); the NumPy loop always runs on the CPU
DEVICE = torch.device("cpu")


def best_seconds(fn: Callable[[], object], repeats: int, device: torch.device | None = None) -> float:
    """Fewest CPU seconds of this process over `repeats` calls (CPU time, not wall time,
    so that other jobs on a shared machine do not count); on a CUDA `device`, wall
    seconds with the device synchronised before and after each call."""
    cuda = device is not None and device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        start = clock()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        best = min(best, clock() - start)
    return best


def training_step(augmentation: Augmentation, batch: FlowBatch) -> Callable[[], None]:
    """One training step with `augmentation` (policy double, the study's classifier and
    optimiser), warmed up."""
    from tsda.classifier.module import ClassifierModule

    model = ClassifierModule(num_classes=20, augmentation=augmentation, policy="double").to(DEVICE)
    batch = batch.to(DEVICE)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = model.training_step(batch, 0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()
    return step


def interleaved_best(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Fewest CPU seconds of each step over `repeats` rounds, one call of each per round,
    so that a shared machine's load shifts all of them alike."""
    best = {name: float("inf") for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            best[name] = min(best[name], best_seconds(step, 1, DEVICE))
    return best


def policy_steps(batch: FlowBatch, repeats: int) -> None:
    """Print each policy's step time against the step with its slowest op, and the ratio."""
    policies = {
        "trivial_augment.yaml": build_augmentation(CONFIGS / "trivial_augment.yaml"),
        "rand_augment.yaml": build_augmentation(CONFIGS / "rand_augment.yaml"),
        "TrivialAugment(levels=11)": TrivialAugment(levels=11),
        "TrivialAugment(levels=31)": TrivialAugment(levels=31),
    }
    augmentations = {**{name: cls() for name, cls in HANDCRAFTED.items()}, **policies}
    best = interleaved_best({name: training_step(aug, batch) for name, aug in augmentations.items()}, repeats)
    slowest = max(HANDCRAFTED, key=best.get)  # every policy here draws from all 18 ops
    unit = "wall ms" if DEVICE.type == "cuda" else "CPU ms"
    print(
        f"\ntraining step on {DEVICE}, {len(batch)} flows + {len(batch)} augmented, {unit} (best of {repeats}); "
        f"slowest op: {slowest} {best[slowest] * 1e3:.1f} ms, fastest op {min(best[n] for n in HANDCRAFTED) * 1e3:.1f}"
    )
    print(f"{'policy':28s} {'step ms':>8s} {'ratio':>6s}")
    for name in policies:
        print(f"{name:28s} {best[name] * 1e3:8.1f} {best[name] / best[slowest]:5.2f}x")
    print("target: ratio <= 1.2x")


def op_throughput(args: argparse.Namespace) -> None:
    """Print each augmentation's flows per second, torch against the NumPy loop."""
    batch = random_batch(args.flows, args.packets)
    ctx = Context(batch.x.numpy(), batch.lengths.numpy(), batch.labels.numpy())
    print(
        f"{args.flows} flows x {args.packets} packets, torch on {DEVICE}, NumPy on the CPU, {args.threads} "
        "thread(s); flows per second (CPU seconds; on a GPU, wall seconds of the torch side; best of runs)"
    )
    on_device = batch.to(DEVICE)
    print(f"{'augmentation':22s} {'torch':>12s} {'numpy loop':>12s} {'ratio':>8s}")
    ratios = []
    for name, cls in HANDCRAFTED.items():
        aug, g = cls(), torch.Generator(device=DEVICE).manual_seed(0)
        aug(on_device, g)  # warm-up
        t_torch = best_seconds(lambda aug=aug, g=g: aug(on_device, g), args.repeats, DEVICE)
        rng = np.random.default_rng(0)
        t_numpy = best_seconds(lambda name=name, rng=rng: run_numpy(NUMPY[name], ctx, rng), args.numpy_repeats)
        ratio = t_numpy / t_torch
        ratios.append(ratio)
        print(f"{name:22s} {args.flows / t_torch:12,.0f} {args.flows / t_numpy:12,.0f} {ratio:7.1f}x", flush=True)
    print(f"lowest ratio {min(ratios):.1f}x (target >= 20x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=4096)
    parser.add_argument("--packets", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=100, help="torch runs per augmentation (best taken; one run is milliseconds)"
    )
    parser.add_argument("--numpy-repeats", type=int, default=5)
    parser.add_argument("--step-flows", type=int, default=256, help="B of the policy steps (the study's)")
    parser.add_argument("--step-repeats", type=int, default=20, help="training steps per policy or op")
    parser.add_argument("--policies-only", action="store_true", help="only the policy steps")
    parser.add_argument("--device", default="cpu", help="the torch side: cpu, cuda, cuda:N or auto")
    args = parser.parse_args()
    global DEVICE
    DEVICE = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    if not args.policies_only:
        op_throughput(args)
    policy_steps(random_batch(args.step_flows, args.packets), args.step_repeats)


if __name__ == "__main__":
    main()
