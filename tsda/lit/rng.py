"""`RunGenerator`: the one seeded `torch.Generator` a module draws its own randomness from.

Every module has some randomness of its own beyond weight initialisation: the classifier's
augmentation draws, the generators' training noise. Each gets it from a `RunGenerator`:
created lazily on the module's device from the run seed (so the draws happen where the
data are), and saved in checkpoints (`save_to` / `load_from`) so that a run resumed with
`--ckpt_path` draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any

import torch

#: checkpoint key holding the generator states, `{name: (device type, state)}`
CHECKPOINT_KEY = "tsda_rng"


class RunGenerator:
    """A lazily created, seeded `torch.Generator` whose state travels in checkpoints.

    Args:
        seed: the run seed.
        name: key of this generator in the checkpoint (a module may hold several).
    """

    def __init__(self, seed: int, name: str) -> None:
        self.seed, self.name = int(seed), name
        self._generator: torch.Generator | None = None
        self._pending: tuple[str, torch.Tensor] | None = None

    def get(self, device: torch.device | str) -> torch.Generator:
        """The generator on `device` (re-created, from the seed or a restored state, when
        the device changes)."""
        device = torch.device(device)
        g = self._generator
        if g is None or g.device != device:
            g = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending is not None and self._pending[0] == device.type:
                g.set_state(self._pending[1])
            self._pending = None
            self._generator = g
        return g

    def save_to(self, checkpoint: dict[str, Any]) -> None:
        """Store the current state in `checkpoint` (nothing before the first draw)."""
        state = self._pending
        if self._generator is not None:
            state = (self._generator.device.type, self._generator.get_state())
        if state is not None:
            checkpoint.setdefault(CHECKPOINT_KEY, {})[self.name] = state

    def load_from(self, checkpoint: dict[str, Any]) -> None:
        """Restore the state saved by `save_to` (applied on the next `get` on a device of the
        same type; a checkpoint without one, or from another device type, restarts from the
        seed)."""
        state = checkpoint.get(CHECKPOINT_KEY, {}).get(self.name)
        self._generator = None
        self._pending = None if state is None else (str(state[0]), torch.as_tensor(state[1], dtype=torch.uint8))
