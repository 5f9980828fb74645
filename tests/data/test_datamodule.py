"""FlowDataModule and IndexBatchSampler: determinism, class weighting, devices, sharding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.flows import random_table

from tsda.data.batch import FlowBatch
from tsda.data.datamodule import FlowDataModule, IndexBatchSampler
from tsda.data.sources import write_parquet


@pytest.fixture
def parquet_path(tmp_path: Path) -> Path:
    """Three imbalanced classes of long flows (all survive curation with min_class_size 5)."""
    table = random_table(counts=(300, 60, 20), max_packets=32, min_len=11, max_len=40, seed=4)
    return write_parquet(table, tmp_path / "flows.parquet")


def datamodule(path: Path, **kwargs: object) -> FlowDataModule:
    args = {"path": str(path), "min_class_size": 5, "batch_size": 32, "eval_batch_size": 64}
    return FlowDataModule(**{**args, **kwargs})


def all_batches(dm: FlowDataModule, epochs: int = 2) -> list[FlowBatch]:
    loader = dm.train_dataloader()
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out.extend(loader)
    return out


def test_same_seed_same_batches(parquet_path: Path) -> None:
    a, b = all_batches(datamodule(parquet_path, split_seed=3)), all_batches(datamodule(parquet_path, split_seed=3))
    assert len(a) == len(b) > 2
    for x, y in zip(a, b):
        assert torch.equal(x.x, y.x) and torch.equal(x.labels, y.labels)
    c = all_batches(datamodule(parquet_path, split_seed=4))
    assert not all(torch.equal(x.labels, y.labels) for x, y in zip(a, c))


def test_epochs_differ_and_cover_the_training_split(parquet_path: Path) -> None:
    dm = datamodule(parquet_path)
    loader = dm.train_dataloader()
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        epochs.append(torch.cat([b.x[:, 0, 0] for b in loader]))
    n_train = len(dm.splits["train"])
    assert len(epochs[0]) == len(epochs[1]) == n_train
    assert not torch.equal(epochs[0], epochs[1]), "a fresh order each epoch"
    assert torch.equal(epochs[0].sort().values, epochs[1].sort().values), "each epoch is a permutation"


def test_batches_are_flow_batches_on_the_device(parquet_path: Path) -> None:
    dm = datamodule(parquet_path, n_packets=16)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert isinstance(batch, FlowBatch)
        assert batch.x.shape[1:] == (3, 16)
        assert batch.x.device == torch.device("cpu")
    assert len(next(iter(dm.train_dataloader()))) == 32
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == dm.table.n_flows == 380


class FakeTrainer:
    """What FlowDataModule asks its trainer: the device, the rank and the world size."""

    def __init__(self, device: str, global_rank: int = 0, world_size: int = 1) -> None:
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()
        self.global_rank, self.world_size = global_rank, world_size


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_tensors_live_on_the_trainer_device(parquet_path: Path, device: str) -> None:
    dm = datamodule(parquet_path)
    dm.trainer = FakeTrainer(device)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert batch.x.device.type == batch.labels.device.type == batch.lengths.device.type == device


def test_each_rank_trains_on_its_shard(parquet_path: Path) -> None:
    drawn = []
    for rank in range(2):
        dm = datamodule(parquet_path)
        dm.trainer = FakeTrainer("cpu", global_rank=rank, world_size=2)
        dm.setup("fit")
        drawn.append(torch.cat([b.x.flatten(1) for b in dm.train_dataloader()]))  # (n_rank, 3L)
    assert abs(len(drawn[0]) - len(drawn[1])) <= 1
    assert len(drawn[0]) + len(drawn[1]) == len(datamodule(parquet_path).splits["train"])
    flows = [{tuple(row) for row in d.tolist()} for d in drawn]
    assert len(flows[0]) == len(drawn[0]), "no flow twice within a rank"
    assert not flows[0] & flows[1], "ranks must not share flows"


def test_class_weighted_sampler_favours_minority_classes(parquet_path: Path) -> None:
    plain = torch.cat([b.labels for b in all_batches(datamodule(parquet_path), epochs=3)])
    weighted = torch.cat([b.labels for b in all_batches(datamodule(parquet_path, sampler="class_weighted"), epochs=3)])
    share_plain = torch.bincount(plain, minlength=3).double() / len(plain)
    share_weighted = torch.bincount(weighted, minlength=3).double() / len(weighted)
    assert share_plain[2] < 0.1  # 20 of 380 flows
    assert share_weighted[2] > 0.25  # about a third with 1 / class count weights
    assert share_weighted[0] < 0.45 and share_weighted[2] > 3 * share_plain[2]


def test_index_batch_sampler_eval_shards_are_disjoint_and_complete() -> None:
    shards = [IndexBatchSampler(103, 10, seed=5, rank=r, world_size=2, pad=False) for r in range(2)]
    drawn = [torch.cat(list(s)) for s in shards]
    assert not set(drawn[0].tolist()) & set(drawn[1].tolist())
    assert sorted(drawn[0].tolist() + drawn[1].tolist()) == list(range(103))
    assert [len(s) for s in shards] == [len(list(s)) for s in shards] == [6, 6]
    assert abs(len(drawn[0]) - len(drawn[1])) <= 1


@pytest.mark.parametrize("n, batch, world", [(2049, 256, 2), (1799, 899, 2), (10, 3, 4), (7, 2, 3), (1, 4, 2)])
def test_index_batch_sampler_training_shards_are_equal(n: int, batch: int, world: int) -> None:
    """Regression: `order[rank::world]` without padding gave ranks different numbers of
    batches (2,049 flows, batch 256, 2 ranks: 5 and 4; 1,799 / 899: 2 and 1), and the rank
    with the extra batch waited on a collective forever under DDP."""
    for weighted in (False, True):
        weights = torch.ones(n) if weighted else None
        shards = [IndexBatchSampler(n, batch, seed=3, weights=weights, rank=r, world_size=world) for r in range(world)]
        drawn = [list(s) for s in shards]
        assert len({len(d) for d in drawn}) == 1 and all(len(s) == len(d) for s, d in zip(shards, drawn))
        assert len({sum(len(b) for b in d) for d in drawn}) == 1  # the same number of flows too
        if not weighted:  # every flow is drawn; the padding repeats at most world - 1 of them
            flat = torch.cat([torch.cat(d) for d in drawn]).tolist()
            assert set(flat) == set(range(n)) and len(flat) - n < world


def test_index_batch_sampler_seed_and_drop_last() -> None:
    a = torch.cat(list(IndexBatchSampler(50, 8, seed=1)))
    b = torch.cat(list(IndexBatchSampler(50, 8, seed=1)))
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))
    s = IndexBatchSampler(50, 8, seed=1, drop_last=True)
    batches = list(s)
    assert len(batches) == len(s) == 6 and all(len(x) == 8 for x in batches)
    ordered = torch.cat(list(IndexBatchSampler(20, 8, shuffle=False)))
    assert torch.equal(ordered, torch.arange(20))
    with pytest.raises(ValueError, match="batch_size"):
        IndexBatchSampler(10, 0)


def test_unknown_sampler_and_split_raise() -> None:
    with pytest.raises(ValueError, match="sampler"):
        FlowDataModule(sampler="balanced")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        FlowDataModule(split="random")  # type: ignore[arg-type]


def test_class_names_relabel_and_count_unknown(tmp_path: Path) -> None:
    table = random_table(counts=(30, 20, 10), min_len=11, max_len=30, names=("b", "x", "a"))
    path = write_parquet(table, tmp_path / "other.parquet")
    dm = datamodule(path, split="none", min_class_size=0, class_names=["a", "b", "c"])
    assert dm.class_names == ["a", "b", "c"]
    assert dm.dropped_classes == {"x": 20}
    assert np.bincount(dm.table.labels, minlength=3).tolist() == [10, 30, 0]
    assert len(dm.splits["test"]) == 40 and len(dm.splits["train"]) == 0


def test_train_fraction_subsamples_training_only(parquet_path: Path) -> None:
    full, part = datamodule(parquet_path), datamodule(parquet_path, train_fraction=0.1)
    assert np.array_equal(full.splits["test"], part.splits["test"])
    assert np.array_equal(full.splits["val"], part.splits["val"])
    assert len(part.splits["train"]) < 0.15 * len(full.splits["train"])
    assert set(part.table.labels[part.splits["train"]]) == {0, 1, 2}


def test_synthetic_source_when_no_path() -> None:
    dm = FlowDataModule(synthetic_scale=0.02, synthetic_apps=4, min_class_size=5)
    assert dm.num_classes == 4
    assert dm.table.max_packets == 20
    assert "capture" in dm.table.meta
