"""`RunGenerator`: the one seeded `torch.Generator` a module draws its own randomness from.

Every module has some randomness of its own beyond weight initialisation: the classifier's
augmentation draws, the generators' training noise. Each gets it from a `RunGenerator`:
created lazily on the module's device from the run seed (so the draws happen where the
data are), and saved in checkpoints (`save_to` / `load_from`) so that a run resumed with
`--ckpt_path` draws exactly what the uninterrupted run would have drawn.

Under DDP every rank draws from its own stream: rank r seeds with `rank_seed(seed, r)`
(rank 0 with the run seed itself, so one process draws what rank 0 of many does). Only
rank 0's state is checkpointed (Lightning writes the checkpoint on rank 0); other ranks
restart their stream from their seed on resume.

`SeededModule` is the LightningModule base that holds one `RunGenerator` and carries it
through the checkpoint hooks, so each module only names its generator and draws from it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from tsda.seeds import seeded_generator

#: checkpoint key holding the generator states, `{name: (device type, rank, state)}`
CHECKPOINT_KEY = "tsda_rng"


def rank_seed(seed: int, rank: int) -> int:
    """The seed of DDP rank `rank`'s stream: `seed` on rank 0, distinct on the others."""
    return int(seed) + 1_000_003 * int(rank)


class RunGenerator:
    """A lazily created, seeded `torch.Generator` whose state travels in checkpoints.

    Args:
        seed: the run seed.
        name: key of this generator in the checkpoint (a module may hold several).
    """

    def __init__(self, seed: int, name: str) -> None:
        self.seed, self.name = int(seed), name
        self._generator: torch.Generator | None = None
        self._pending: tuple[str, int, torch.Tensor] | None = None
        self._rank = 0

    def get(self, device: torch.device | str, rank: int = 0) -> torch.Generator:
        """The generator of DDP rank `rank` on `device` (re-created, from its seed or a
        restored state, when the device or rank changes)."""
        device = torch.device(device)
        g = self._generator
        if g is None or g.device != device or self._rank != rank:
            g = seeded_generator(rank_seed(self.seed, rank), device)
            pending = self._pending
            if pending is not None and pending[0] == device.type and pending[1] == rank:
                g.set_state(pending[2])
            self._pending, self._generator, self._rank = None, g, rank
        return g

    def save_to(self, checkpoint: dict[str, Any]) -> None:
        """Store the current state in `checkpoint` (nothing before the first draw)."""
        state = self._pending
        if self._generator is not None:
            state = (self._generator.device.type, self._rank, self._generator.get_state())
        if state is not None:
            checkpoint.setdefault(CHECKPOINT_KEY, {})[self.name] = state

    def load_from(self, checkpoint: dict[str, Any]) -> None:
        """Restore the state saved by `save_to` (applied on the next `get` on a device of the
        same type; a checkpoint without one, or from another device type, restarts from the
        seed)."""
        state = checkpoint.get(CHECKPOINT_KEY, {}).get(self.name)
        self._generator = None
        if state is not None and len(state) == 3:
            self._pending = (str(state[0]), int(state[1]), torch.as_tensor(state[2], dtype=torch.uint8))
        else:
            self._pending = None


class SeededModule(L.LightningModule):
    """A LightningModule with one `RunGenerator` whose state its checkpoints carry.

    The classifier, the generators and the joint module all draw their own randomness the
    same way; this base holds that plumbing once. A subclass calls `init_run_generator(seed,
    name)` in `__init__` and draws from `run_generator`. The checkpoint hooks call `super()`
    first, so a base that writes its own keys (`GenerativeModule`'s class path) keeps doing so
    whatever the order of the bases.
    """

    _rng: RunGenerator | None = None

    def init_run_generator(self, seed: int, name: str) -> None:
        """Give the module its generator: seeded with the run seed, saved under `name`."""
        self._rng = RunGenerator(seed, name)

    @property
    def run_generator(self) -> torch.Generator:
        """The module's generator on its device, for this DDP rank (its state is checkpointed)."""
        if self._rng is None:
            raise RuntimeError(f"{type(self).__name__}: call init_run_generator in __init__ before drawing")
        return self._rng.get(self.device, self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._rng is not None:
            self._rng.save_to(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self._rng is not None:
            self._rng.load_from(checkpoint)
