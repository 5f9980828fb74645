"""A callback for the DDP tests (`tests/lit/test_ddp.py`), loaded by class path in the `tsda fit`
subprocesses: at the end of training every rank must hold the same weights and the same
training statistics (DDP broadcasts rank 0's buffers before each forward, so a statistic
a rank updates on its own shard in a buffer would differ, or be lost)."""

from __future__ import annotations

import itertools

import lightning as L
import torch

#: per-rank by design: BatchNorm running statistics (DDP broadcasts rank 0's before each forward)
PER_RANK = ("running_mean", "running_var", "num_batches_tracked")


class RanksAgree(L.Callback):
    """Raise at `on_train_end` when ranks disagree on a parameter or buffer (a digest each:
    sum and sum of squares in float64), naming them."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        names, digests = [], []
        for name, t in itertools.chain(pl_module.named_parameters(), pl_module.named_buffers()):
            if any(p in name for p in PER_RANK):
                continue
            v = t.detach().double()
            names.append(name)
            digests.append(torch.stack([v.sum(), (v * v).sum()]))
        gathered = trainer.strategy.all_gather(torch.stack(digests))  # (W, n, 2)
        same = torch.isclose(gathered, gathered[:1], rtol=1e-5, atol=1e-6).all(2).all(0)  # (n,)
        differ = [n for n, ok in zip(names, same.tolist()) if not ok]
        if differ:
            raise AssertionError(f"DDP ranks disagree on {differ}")
        if trainer.is_global_zero:
            print(f"ddp_probe: {trainer.world_size} ranks agree on {len(names)} tensors", flush=True)
