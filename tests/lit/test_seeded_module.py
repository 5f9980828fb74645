"""`SeededModule`: the one seeded run generator every module draws from, carried by its checkpoints."""

from __future__ import annotations

from typing import Any

import torch

from tsda.generators.base import GenerativeModule
from tsda.lit.rng import CHECKPOINT_KEY, SeededModule, rank_seed


class Drawing(SeededModule):
    """A minimal seeded module whose DDP rank a test sets (Lightning reads it from a trainer)."""

    def __init__(self, seed: int = 0, rank: int = 0) -> None:
        super().__init__()
        self.rank = rank
        self.init_run_generator(seed, "noise")

    @property
    def global_rank(self) -> int:  # type: ignore[override]
        return self.rank

    def draw(self, n: int = 8) -> torch.Tensor:
        return torch.rand(n, generator=self.run_generator, device=self.device)


class SeededGenerative(SeededModule, GenerativeModule):
    """The generators' base order: the seeded base first, the generator contract after it."""

    def __init__(self) -> None:
        super().__init__()
        self.init_run_generator(3, "noise")

    def sample(self, labels: torch.Tensor, generator: torch.Generator, **options: Any) -> Any:
        raise NotImplementedError


def test_the_same_seed_draws_the_same_stream() -> None:
    assert torch.equal(Drawing(7).draw(), Drawing(7).draw())
    assert not torch.equal(Drawing(7).draw(), Drawing(8).draw())


def test_the_state_round_trips_through_a_checkpoint() -> None:
    """A module restored from a checkpoint draws what the saving one would have drawn next."""
    saving = Drawing(5)
    saving.draw()
    checkpoint: dict[str, Any] = {}
    saving.on_save_checkpoint(checkpoint)
    assert set(checkpoint[CHECKPOINT_KEY]) == {"noise"}
    restored = Drawing(5)
    restored.on_load_checkpoint(checkpoint)
    assert torch.equal(restored.draw(), saving.draw())


def test_nothing_is_saved_before_the_first_draw() -> None:
    checkpoint: dict[str, Any] = {}
    Drawing(5).on_save_checkpoint(checkpoint)
    assert CHECKPOINT_KEY not in checkpoint


def test_rank_r_draws_its_own_stream() -> None:
    """Rank 0 draws what a single process does; rank r draws from `rank_seed(seed, r)`."""
    rank0, rank1 = Drawing(4, rank=0).draw(), Drawing(4, rank=1).draw()
    assert torch.equal(rank0, Drawing(4).draw())
    assert not torch.equal(rank0, rank1)
    expected = torch.rand(8, generator=torch.Generator().manual_seed(rank_seed(4, 1)))
    assert torch.equal(rank1, expected)


def test_a_generator_checkpoint_keeps_its_class_path_beside_the_state() -> None:
    """`GenerativeModule.on_save_checkpoint` still runs under the seeded base (`load_generative` reads it)."""
    module = SeededGenerative()
    _ = module.run_generator
    checkpoint: dict[str, Any] = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint[GenerativeModule.CLASS_PATH_KEY].endswith("SeededGenerative")
    assert set(checkpoint[CHECKPOINT_KEY]) == {"noise"}
