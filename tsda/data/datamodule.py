"""`FlowDataModule`: source -> curation -> split -> encoded tensors on the training device."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.curation import (FILE_ROW, SOURCE_ROW, SPLIT_KINDS, SplitKind, check_stored_split, curate,
                                curate_stored, group_fraction, holds_copies, source_rows, split_indices,
                                stored_split_indices, stratified_fraction)
from tsda.data.sources import FlowDataError, ParquetColumns, parquet_rows, read_parquet
from tsda.data.table import FlowTable
from tsda.seeds import seeded_generator

#: hyper-parameters that do not change the curated table (left out of its cache key)
_NOT_TABLE = ("batch_size", "eval_batch_size", "sampler", "sampler_seed", "split_seed", "train_fraction")
#: curated tables of the last sources read in this process (a campaign's ensemble job builds
#: one datamodule per member from the same file: it is read and curated once)
_TABLES: OrderedDict[tuple[Any, ...], tuple[FlowTable, dict[str, int]]] = OrderedDict()
_TABLES_KEPT = 2
#: the splits each Lightning stage uses (`setup` encodes only those)
Split = Literal["train", "val", "test"]
_STAGE_SPLITS: dict[str, tuple[Split, ...]] = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


class IndexBatchSampler(Sampler[torch.Tensor]):
    """Yields `(b,)` int64 index tensors, one per batch, drawn from a seeded generator.

    Each epoch draws a fresh order (seed and epoch number make the generator's seed).
    With `weights` (`(N,)`, e.g. 1 / class count) indices are drawn with replacement in
    proportion to the weights, N per epoch. With `world_size > 1` each rank takes every
    `world_size`-th index of the same draw (its shard). With `pad` (training under DDP) the
    draw is first padded by repeating its first indices up to a multiple of `world_size`,
    as PyTorch's `DistributedSampler` does, so every rank gets the same number of flows
    and of batches (a rank with an extra batch would wait on a collective forever); without
    it (evaluation) every flow is seen exactly once and ranks may differ by one flow.

    With `device` (the data's), each epoch's draw, made on the host as always (the same
    batches for a seed on any device), is copied there once (pinned, non-blocking on CUDA)
    and the batches are slices of it: a copy of host indices per batch would block the host
    until the device is idle, every step.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool = True,
        weights: torch.Tensor | None = None,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.weights, self.seed, self.drop_last = weights, seed, drop_last
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.device = torch.device(device) if device is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        g = seeded_generator(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        elif self.shuffle:
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        if self.pad and self.world_size > 1 and self.n % self.world_size:
            extra = self.world_size - self.n % self.world_size
            order = torch.cat([order, order.repeat(extra // self.n + 1)[:extra]])  # (n + extra,)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = self._order()
        if self.device is not None and self.device != order.device:
            cuda = self.device.type == "cuda"
            order = (order.pin_memory() if cuda else order).to(self.device, non_blocking=cuda)
        self.epoch += 1
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        for start in range(0, stop, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self) -> int:
        if self.pad:
            per_rank = -(-self.n // self.world_size)  # padded: the same on every rank
        else:
            per_rank = len(range(self.rank, self.n, self.world_size))
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)


class _BatchDataset(Dataset):
    """Serves whole batches: `dataset[idx]` with `idx (b,)` returns a `FlowBatch`."""

    def __init__(self, batch: FlowBatch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, idx: torch.Tensor) -> FlowBatch:
        return self.batch.index(idx.to(self.batch.device))  # the samplers' indices are there already


def _identity(x: FlowBatch) -> FlowBatch:
    return x


class FlowDataModule(L.LightningDataModule):
    """Flows from the embedded synthetic simulator or a tcbench-style Parquet file.

    Args:
        path: Parquet file; None = the embedded synthetic dataset.
        synthetic_scale: fraction of MIRAGE19's class sizes the simulator draws (1.0 = 64k flows).
        synthetic_apps: number of simulated apps.
        label_column, sizes_column, directions_column, times_column, packets_column:
            Parquet column names (tcbench defaults).
        group_column: metadata column for `split='group'` (flows of one capture stay together).
        split_column: the column of a stored split (`split='column'`), default `split`.
        invalid_rows: `error` (default) stops at the first malformed row naming it;
            `drop` leaves such rows out with a warning (real captures have a few).
        min_packets: keep flows with more than this many packets.
        min_class_size: keep classes with more than this many flows (after `min_packets`).
        n_packets: `L`, packets per flow given to models.
        split: `stratified` 80/10/10 (by default), `group`, `none` (every flow is test), or
            `column`: the split stored in the file's `split_column` (`train`, `val`, `test`;
            an enlarged file of `tsda augment enlarge`, see `tsda.data.curation`). A stored
            split is checked (other values, a `source_row` outside the file or a copy in
            validation/test are refused) and curated by original: a copy is kept or dropped
            with its original (`source_row`), `min_packets` is the original's packet count,
            and no class is dropped (`min_class_size` does not apply: the file was curated
            when it was made, and an enlarged 10 % slice holds fewer flows per class than
            its source did). A file holding augmented copies is
            refused with `stratified` or `group` (copies of one flow would straddle splits).
        val_fraction, test_fraction: split sizes (not used by `column`).
        train_fraction: class-stratified fraction of the training split to keep (quick studies);
            with `column` a fraction of the training originals, each kept with all its
            copies (grouped by `source_row`), so the subsample stays leak-free.
        split_seed: seeds the split and the synthetic data (fixed across a campaign's seeds;
            named apart from the modules' `seed`, which `seed_everything` sets).
        sampler_seed: seeds the batch order (the CLI links `seed_everything` here);
            None = `split_seed`.
        batch_size: training batch size `B`.
        eval_batch_size: validation/test batch size.
        sampler: `class_weighted` draws flows with probability 1 / class count (the paper's
            sampler); `none` shuffles.
        class_names: map labels onto these names (a trained model's classes); flows of other
            classes are counted in `dropped_classes` and left out.
        mtu, iat_unit, iat_max: the `FlowCodec` settings.
    """

    hparams: Any  # for mypy: Lightning types it AttributeDict | MutableMapping, read by attribute here

    def __init__(
        self,
        path: str | None = None,
        synthetic_scale: float = 1.0,
        synthetic_apps: int = 20,
        label_column: str = "app",
        sizes_column: str = "pkts_size",
        directions_column: str = "pkts_dir",
        times_column: str = "timetofirst",
        packets_column: str | None = "packets",
        group_column: str = "capture",
        split_column: str = "split",
        invalid_rows: Literal["error", "drop"] = "error",
        min_packets: int = 10,
        min_class_size: int = 100,
        n_packets: int = 20,
        split: SplitKind = "stratified",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        train_fraction: float = 1.0,
        split_seed: int = 0,
        sampler_seed: int | None = None,
        batch_size: int = 256,
        eval_batch_size: int = 2048,
        sampler: Literal["none", "class_weighted"] = "none",
        class_names: list[str] | None = None,
        mtu: float = 1460.0,
        iat_unit: float = 1e-3,
        iat_max: float = 10.0,
    ) -> None:
        super().__init__()
        if sampler not in ("none", "class_weighted"):
            raise ValueError(f"data.sampler must be 'none' or 'class_weighted', got {sampler!r}")
        if split not in SPLIT_KINDS:
            raise ValueError(f"data.split must be one of {', '.join(SPLIT_KINDS)}, got {split!r}")
        if split == "column" and path is None:
            raise ValueError("data.split column reads a split stored in a file: set data.path "
                             "(e.g. a file written by tsda augment enlarge)")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("data.batch_size and data.eval_batch_size must be >= 1")
        # class_names is the model's business in the hparams a run logs; kept apart here
        self.save_hyperparameters(ignore=["class_names"])
        self.known_classes = list(class_names) if class_names is not None else None
        self.codec = FlowCodec(n_packets=n_packets, mtu=mtu, iat_unit=iat_unit, iat_max=iat_max)
        self._table: FlowTable | None = None
        self._splits: dict[str, np.ndarray] | None = None
        self.tensors: dict[str, FlowBatch] = {}
        self._placed: torch.device | None = None  # `place_on`
        self.dropped_classes: dict[str, int] = {}

    @classmethod
    def from_tables(
        cls, train: FlowTable, val: FlowTable, test: FlowTable, **kwargs: object
    ) -> FlowDataModule:
        """A datamodule over in-memory, already curated splits (e.g. synthetic flows to train
        on and real flows to test on); `kwargs` are the other constructor arguments. Flows
        are truncated/padded to `n_packets`; the three tables must share `class_names`."""
        dm = cls(**kwargs)  # type: ignore[arg-type]
        n = dm.hparams.n_packets
        parts = [t.truncate(n) for t in (train, val, test)]
        dm._table = FlowTable.concat(parts)
        ends = np.cumsum([len(t) for t in parts])
        dm._splits = {"train": np.arange(0, ends[0]), "val": np.arange(ends[0], ends[1]),
                      "test": np.arange(ends[1], ends[2])}
        return dm

    # -- the table, loaded once on first need ---------------------------------------------
    def raw_table(self, max_packets: int | None = None) -> FlowTable:
        """The source's flows before curation, at most `max_packets` packets each (default:
        the simulator's 64, a file's `n_packets`): the synthetic simulator or the Parquet
        file with its columns."""
        h = self.hparams
        if h.path is None:
            from tsda.data.synthetic import make_synthetic

            return make_synthetic(n_apps=h.synthetic_apps, scale=h.synthetic_scale, seed=h.split_seed,
                                  **({} if max_packets is None else {"max_packets": max_packets}))
        max_packets = max(h.n_packets if max_packets is None else max_packets, 1)
        cols = ParquetColumns(h.label_column, h.sizes_column, h.directions_column,
                              h.times_column, h.packets_column)
        meta = tuple(c for c in (h.group_column, SOURCE_ROW, h.split_column if h.split == "column" else None) if c)
        return read_parquet(h.path, cols, max_packets=max_packets, meta_columns=meta,
                            invalid_rows=h.invalid_rows, row_index=FILE_ROW)

    def _load(self) -> FlowTable:
        h = self.hparams
        raw = self.raw_table()
        if h.split == "column":
            n_rows = parquet_rows(h.path)
            check_stored_split(raw, h.split_column, str(h.path), n_rows)
            table = curate_stored(raw, h.min_packets, h.n_packets, n_rows)
        else:
            if h.split in ("stratified", "group") and holds_copies(raw):
                raise FlowDataError(
                    f"{h.path}: holds augmented copies (column {SOURCE_ROW!r}); --data.split {h.split} would "
                    "put copies of one flow in several splits: use --data.split column")
            table = curate(raw, h.min_packets, h.min_class_size, h.n_packets)
        if self.known_classes is not None:
            table, self.dropped_classes = table.relabel(self.known_classes)
        return table

    @property
    def table(self) -> FlowTable:
        """The curated table (every split); a source already read and curated the same way in
        this process (same file, size and modification time) is not read again."""
        if self._table is None:
            key = self._table_key()
            if key is not None and key in _TABLES:
                _TABLES.move_to_end(key)
                self._table, dropped = _TABLES[key]
                self.dropped_classes = dict(dropped)
            else:
                self._table = self._load()
                if key is not None:
                    _TABLES[key] = (self._table, dict(self.dropped_classes))
                    while len(_TABLES) > _TABLES_KEPT:
                        _TABLES.popitem(last=False)
        return self._table

    def _table_key(self) -> tuple[Any, ...] | None:
        """What the curated table depends on: the file's identity and the curation settings
        (None for the simulator, which is cheap to rebuild)."""
        h = self.hparams
        if h.path is None or not os.path.isfile(h.path):
            return None
        stat = os.stat(h.path)
        settings = tuple(sorted((k, repr(v)) for k, v in h.items() if k not in _NOT_TABLE))
        return (os.path.realpath(h.path), stat.st_size, stat.st_mtime_ns, settings, repr(self.known_classes))

    @property
    def class_names(self) -> list[str]:
        return list(self.table.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.table.class_names)

    @property
    def splits(self) -> dict[str, np.ndarray]:
        """Row indices of each split into `table`."""
        if self._splits is None:
            h = self.hparams
            if h.split == "column":
                s = stored_split_indices(self.table, h.split_column)
            else:
                s = split_indices(self.table, h.split, h.split_seed, h.val_fraction, h.test_fraction, h.group_column)
            if h.train_fraction < 1 and len(s["train"]):
                labels = self.table.labels[s["train"]]
                keep = (group_fraction(labels, source_rows(self.table)[s["train"]], h.train_fraction, h.split_seed)
                        if h.split == "column" else stratified_fraction(labels, h.train_fraction, h.split_seed))
                s["train"] = s["train"][keep]
            self._splits = s
        return self._splits

    def split_table(self, name: Split) -> FlowTable:
        return self.table.take(self.splits[name])

    # -- tensors on the device -----------------------------------------------------------
    def place_on(self, device: torch.device | str) -> None:
        """Keep the flows on `device` whatever trainer (if any) this datamodule is attached
        to: for a module that trains from it without handing it to the Trainer (the
        ensemble, which would otherwise get CPU tensors next to CUDA members)."""
        self._placed = torch.device(device)

    def _device(self) -> torch.device:
        if self._placed is not None:
            return self._placed
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        """Encode the splits `stage` uses onto the training device (`fit`: train and val, so
        training never reads the test split; `test`: test; None or another stage: all)."""
        for name in _STAGE_SPLITS.get(stage or "", ("train", "val", "test")):
            self._encode(name)

    def _encode(self, name: Split) -> None:
        """Encode split `name` onto the device; the training split's flows carry their row
        (`FlowBatch.rows`, `(N,)` 0..N-1), so every batch indexed from it (the training
        loader's, an ensemble member's) says which training flow each is, with no extra
        work or host sync per batch (the same on-device index picks flows and rows)."""
        device = self._device()
        if name not in self.tensors or self.tensors[name].device != device:
            batch = self.codec.encode(self.split_table(name))
            if name == "train":
                batch = batch.replace(rows=torch.arange(len(batch)))
            self.tensors[name] = batch.to(device)

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, name: Split, train: bool, shard: bool = True) -> DataLoader:
        """Batches of split `name`: training draws (shuffled or class-weighted, padded to
        equal shards under DDP) or evaluation order (each rank its unpadded shard, so
        every flow is scored once; `shard=False`: the whole split on every rank)."""
        if name not in self.tensors:
            self._encode(name)
        batch = self.tensors[name]
        h = self.hparams
        rank, world = self._rank() if shard else (0, 1)
        if train:
            sampler = self.train_sampler(h.split_seed if h.sampler_seed is None else h.sampler_seed, rank, world)
        else:
            sampler = IndexBatchSampler(len(batch), h.eval_batch_size, shuffle=False, rank=rank,
                                        world_size=world, pad=False, device=batch.device)
        # with batch_size=None, collate_fn gets one item (torch's stub assumes a list)
        return DataLoader(_BatchDataset(batch), sampler=sampler, batch_size=None, collate_fn=_identity)  # type: ignore[arg-type]

    def train_sampler(self, seed: int, rank: int = 0, world_size: int = 1) -> IndexBatchSampler:
        """The training split's batch sampler drawing from `seed` (shuffled, or class-weighted
        with `sampler: class_weighted`): what `train_dataloader` iterates, and what each
        member of an ensemble (`tsda.classifier.ensemble`) draws its own batch order from."""
        if "train" not in self.tensors:
            self._encode("train")
        labels = torch.as_tensor(self.table.labels[self.splits["train"]], dtype=torch.long)  # (N,) on the host
        weights = None
        if self.hparams.sampler == "class_weighted":
            counts = torch.bincount(labels, minlength=self.num_classes).double()
            weights = (1.0 / counts.clamp_min(1))[labels]
        return IndexBatchSampler(len(labels), self.hparams.batch_size, shuffle=True, weights=weights, seed=seed,
                                 rank=rank, world_size=world_size, pad=True, device=self.tensors["train"].device)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def train_eval_dataloader(self) -> DataLoader:
        """The training split once, in order, at `eval_batch_size` (no sampler, no shuffling):
        for statistics of the training data, such as a generator's class regions (the whole
        split on every rank, so such statistics agree across DDP ranks)."""
        return self._loader("train", train=False, shard=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
