"""`GeneratorAugmentation`: a trained generator behind the augmentation protocol.

Any generator checkpoint (cGAN, diffusion, or any other `GenerativeModule`) becomes an
augmentation with one YAML line (`configs/augment/generator.yaml`):

    tsda fit -c configs/experiment/fgnet_baseline.yaml \\
        --model.init_args.augmentation configs/augment/generator.yaml \\
        --model.init_args.augmentation.init_args.ckpt runs/gen/cgan/checkpoints/last.ckpt

Two ways to get flows:
- fresh (`pool_per_class: 0`): every training batch calls the generator's `sample` for a
  batch of labels (one-shot generators such as the cGAN: one forward pass per batch);
- pool (`pool_per_class: P`): at fit start, P flows of each of the K classes are sampled
  once (class-balanced, on the training device; diffusion: K * P samples instead of 25-50
  denoiser passes per training batch), optionally re-sampled every
  `refresh_every_n_epochs`; each training flow then draws a pool flow of its target class
  with the augmentation's `torch.Generator`.

Labels: `same` (each flow gets a generated flow of its own class) or `balanced` (classes
drawn uniformly: the generator as an oversampler of small classes).

Variations (`mode: vary`, `configs/augment/variation.yaml`): each flow is replaced by a
flow near itself, of its class (`FlowSampler.vary`, `tsda.augment.variation`), `strength`
saying how near (a list: one strength drawn per flow, DA-Fusion's randomised t0). Fresh
variations per batch (`variations_per_flow: 0`), or a variation pool: K variations of
every training flow made once at fit start (the training split comes in
`AugmentContext.train_flows`), each training flow then drawing one of its own K by its
training row (`FlowBatch.rows`). A pooled variation is of the training flow, so whatever
augmentations before it in a `Compose` did to the flow is dropped: put it first.

A pool can also come from a file (`pool_file`, instead of `ckpt`): labelled generated
flows in tcbench's schema, e.g. an unconditional generator's samples labelled by a
classifier (`tsda sample --label_with`). Each class's flows are tiled to `pool_per_class`
slots (default: the largest class count of the file); flows of a class the file lacks are
left as they are (the original flow), and `stats()` counts those classes (`pool_missing_classes`).

Layering: this module knows generators only through the `FlowSampler` protocol below. The
checkpoint is loaded by the `load_sampler` of the `AugmentContext` that `setup` receives;
the training module supplies it (`tsda.generators.base.prepare_augmentation`), so
`tsda.augment` imports neither Lightning nor `tsda.lit`.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal, Protocol

import torch

from tsda.augment.base import AugmentContext, Augmentation, Family, select
from tsda.augment.variation import (MAX_VARIATIONS_PER_FLOW, check_strengths, draw_from_pool, draw_strengths,
                                    strength_values, variation_pool, vary)
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.errors import TsdaError

LabelPolicy = Literal["same", "balanced"]
Mode = Literal["sample", "vary"]
#: upper bound of `pool_per_class` (a 53-class pool of 100k flows each is ~1 GB of float32)
MAX_POOL_PER_CLASS = 100_000


class FlowSampler(Protocol):
    """What the augmentation needs of a generator (every `GenerativeModule` has it).

    `conditional` (optional; absent = True): False for a generator trained without labels,
    which cannot draw flows of a class, so the augmentation refuses it. `can_vary`
    (optional; absent = False): whether `vary` works (`mode: vary` needs it)."""

    @property
    def class_names(self) -> list[str]: ...

    @property
    def codec(self) -> FlowCodec: ...

    @property
    def can_vary(self) -> bool: ...

    def sample(self, labels: torch.Tensor, generator: torch.Generator, **options: Any) -> FlowBatch:
        """Valid flows `x (B, 3, L)` of the classes `labels (B,)`, random only via `generator`."""
        ...

    def vary(self, batch: FlowBatch, strength: float | torch.Tensor, generator: torch.Generator,
             **options: Any) -> FlowBatch:
        """A valid flow near each flow of `batch (B, 3, L)`, of its class: `strength` (a
        number or `(B,)`, in [0, 1]) 0 = the flow itself, 1 = a fresh sample; random only
        via `generator`."""
        ...


class GeneratorAugmentation(Augmentation):
    """Replace (or, with policy `double`, accompany) each flow by a generated flow.

    Args:
        ckpt: a generator checkpoint (any `GenerativeModule`).
        mode: `sample` (a generated flow of the class) or `vary` (a variation of the flow
            itself; needs a conditional generator that can vary, and `ckpt`).
        strength: `vary`: how far from the flow, in [0, 1] (0 = itself, 1 = a fresh
            sample); a list: one drawn per flow, uniformly.
        variations_per_flow: `vary`: K > 0 makes K variations of every training flow once
            at fit start (the variation pool; progress bar, `pool_seconds`, refreshed with
            `refresh_every_n_epochs`); 0 varies every batch afresh.
        pool_file: instead of `ckpt`, a Parquet file of labelled generated flows to use as
            the pool (its labels must be classes of the data).
        pool_per_class: `sample`: flows per class sampled once at fit start (0 = sample
            fresh flows for every batch).
        refresh_every_n_epochs: re-sample the pool before every n-th epoch (0 = never;
            needs a pool).
        labels: `same` (a flow of the batch flow's class) or `balanced` (uniform classes;
            `sample` only).
        options: keyword options of the generator's `sample` / `vary` (diffusion: `steps`,
            `sampler`, `cfg_scale`, `latent_guidance_scale`; cGAN: `prior`, ...).
        sample_batch_size: flows per `sample` / `vary` call when filling the pool.
        progress: show a progress bar while filling the pool.

    The generator is not an attribute of the classifier's `nn.Module` tree, so it never
    enters the classifier's checkpoint. `stats()` reports `pool_seconds` (all pool
    sampling, in seconds), `pool_builds` and `pool_flows`.
    """

    family: ClassVar[Family] = "generator"
    alters: ClassVar[dict[str, float]] = {"size": 1.0, "direction": 1.0, "iat": 1.0}

    def __init__(
        self,
        ckpt: str = "",
        pool_file: str = "",
        pool_per_class: int = 0,
        refresh_every_n_epochs: int = 0,
        labels: LabelPolicy = "same",
        options: dict[str, Any] | None = None,
        sample_batch_size: int = 1024,
        progress: bool = True,
        mode: Mode = "sample",
        strength: float | list[float] = 0.5,
        variations_per_flow: int = 0,
    ) -> None:
        if bool(ckpt) == bool(pool_file):
            raise ValueError("GeneratorAugmentation needs exactly one of ckpt (a generator checkpoint) "
                             "and pool_file (a Parquet file of labelled generated flows)")
        if pool_file and refresh_every_n_epochs:
            raise ValueError("GeneratorAugmentation.refresh_every_n_epochs needs a generator (ckpt), not a pool_file")
        if not 0 <= pool_per_class <= MAX_POOL_PER_CLASS:
            raise ValueError(f"GeneratorAugmentation.pool_per_class must be in [0, {MAX_POOL_PER_CLASS}], "
                             f"got {pool_per_class}")
        if refresh_every_n_epochs < 0:
            raise ValueError(f"GeneratorAugmentation.refresh_every_n_epochs must be >= 0, got {refresh_every_n_epochs}")
        if mode not in ("sample", "vary"):
            raise ValueError(f"GeneratorAugmentation.mode must be 'sample' or 'vary', got {mode!r}")
        strengths = check_strengths("GeneratorAugmentation.strength", strength)
        if not 0 <= variations_per_flow <= MAX_VARIATIONS_PER_FLOW:
            raise ValueError(f"GeneratorAugmentation.variations_per_flow must be in [0, {MAX_VARIATIONS_PER_FLOW}], "
                             f"got {variations_per_flow}")
        if mode == "vary":
            _check_vary_options(pool_file, pool_per_class, labels)
        elif variations_per_flow:
            raise ValueError("GeneratorAugmentation.variations_per_flow needs mode: vary (mode sample pools "
                             "flows per class: pool_per_class)")
        if refresh_every_n_epochs and not pool_per_class and not pool_file and not variations_per_flow:
            raise ValueError("GeneratorAugmentation.refresh_every_n_epochs needs a pool: pool_per_class > 0 "
                             "(mode sample) or variations_per_flow > 0 (mode vary)")
        if labels not in ("same", "balanced"):
            raise ValueError(f"GeneratorAugmentation.labels must be 'same' or 'balanced', got {labels!r}")
        if sample_batch_size < 1:
            raise ValueError(f"GeneratorAugmentation.sample_batch_size must be >= 1, got {sample_batch_size}")
        self.ckpt, self.pool_file = ckpt, pool_file
        self.pool_per_class = pool_per_class
        self.refresh_every_n_epochs = refresh_every_n_epochs
        self.labels = labels
        self.options = dict(options or {})
        self.sample_batch_size = sample_batch_size
        self.progress = progress
        self.mode, self.variations_per_flow = mode, variations_per_flow
        self.strength = strengths[0] if isinstance(strength, (int, float)) else strengths
        self._strengths = strengths
        self._strength_values: float | torch.Tensor | None = None  # draw_strengths' values, made at first use
        self._sampler: FlowSampler | None = None
        self._num_classes = 0
        self._pool: FlowBatch | None = None
        self._per_class = pool_per_class
        self._missing: torch.Tensor | None = None  # (K,) bool: classes the pool file lacks
        self._any_missing = False  # host copy of self._missing.any()
        self._train: FlowBatch | None = None  # (N, 3, L) training flows of a variation pool
        self._pool_seconds = 0.0
        self._pool_builds = 0

    # -- run hooks ------------------------------------------------------------------------
    def setup(self, context: AugmentContext) -> None:
        """Load the generator on `context.device`, check it against the data, fill the pool.

        Raises:
            TsdaError: the checkpoint is an unconditional generator, or knows other classes
                or another codec than the data; `mode: vary` with a generator that cannot
                vary, or a variation pool without the training flows.
        """
        if self.pool_file:
            self._pool_from_file(context)
            return
        if context.load_sampler is None:
            raise ValueError("GeneratorAugmentation.setup needs a context with load_sampler "
                             "(tsda.generators.base.prepare_augmentation supplies it)")
        sampler = context.load_sampler(self.ckpt, context.device)
        if not getattr(sampler, "conditional", True):
            raise TsdaError(f"augmentation checkpoint {self.ckpt}: an unconditional generator (trained with "
                            "conditional: false) cannot draw flows of a class; label its samples with "
                            "tsda sample --label_with CLASSIFIER and train on that file (--data.path)")
        names = list(sampler.class_names)
        if names != list(context.class_names):
            raise TsdaError(f"augmentation checkpoint {self.ckpt}: its generator knows the classes "
                            f"{_short(names)}, the data {_short(list(context.class_names))} "
                            "(train the generator on the same classes, in the same order)")
        if context.codec is not None and sampler.codec != context.codec:
            raise TsdaError(f"augmentation checkpoint {self.ckpt}: its codec {sampler.codec} differs "
                            f"from the data's {context.codec}")
        if self.mode == "vary" and not getattr(sampler, "can_vary", False):
            raise TsdaError(f"augmentation checkpoint {self.ckpt}: its generator ({type(sampler).__name__}) cannot "
                            "vary flows (can_vary is False): use mode: sample, or a generator that can vary")
        self._sampler, self._num_classes = sampler, len(names)
        self._pool, self._pool_seconds, self._pool_builds = None, 0.0, 0
        self._per_class, self._missing, self._any_missing = self.pool_per_class, None, False
        self._train = None
        if self.variations_per_flow:
            self._train = _training_flows(context, self.ckpt, sampler.codec.n_packets)
            self._fill_pool(context.device, context.generator)
        elif self.pool_per_class:
            self._fill_pool(context.device, context.generator)

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        n = self.refresh_every_n_epochs
        if n and epoch > 0 and epoch % n == 0:
            self._fill_pool(generator.device, generator)

    def stats(self) -> dict[str, float]:
        flows = 0 if self._pool is None else len(self._pool)
        stats = {"pool_seconds": self._pool_seconds, "pool_builds": float(self._pool_builds),
                 "pool_flows": float(flows)}
        if self._missing is not None:
            stats["pool_missing_classes"] = float(self._missing.sum())
        return stats

    def _pool_from_file(self, context: AugmentContext) -> None:
        """The pool of `pool_file`: class-major, each class's flows tiled to `_per_class` slots.

        Raises:
            TsdaError: no codec in the context, or flows of classes the data lacks.
        """
        from tsda.data.sources import read_parquet

        if context.codec is None:
            raise TsdaError(f"augmentation pool_file {self.pool_file}: needs the data's codec (train through tsda fit)")
        start = time.perf_counter()
        table, unknown = read_parquet(self.pool_file, max_packets=context.codec.n_packets).relabel(
            list(context.class_names))
        if unknown:
            raise TsdaError(f"augmentation pool_file {self.pool_file}: flows of classes the data lacks: "
                            f"{_short(sorted(unknown))}")
        if len(table) == 0:
            raise TsdaError(f"augmentation pool_file {self.pool_file}: holds no flow")
        flows = context.codec.encode(table.truncate(context.codec.n_packets))
        k = len(context.class_names)
        counts = torch.bincount(flows.labels, minlength=k)  # (K,)
        per_class = self.pool_per_class or int(counts.max())
        order = torch.argsort(flows.labels, stable=True)  # class-major rows of the file
        starts = torch.cumsum(counts, 0) - counts  # (K,)
        slot = torch.arange(per_class)
        rows = starts[:, None] + slot[None, :] % counts.clamp_min(1)[:, None]  # (K, P) tiled per class
        index = order[rows.clamp_max(max(len(order) - 1, 0)).reshape(-1)]
        pool = flows.index(index).replace(labels=torch.arange(k).repeat_interleave(per_class))
        self._sampler, self._num_classes, self._per_class = None, k, per_class
        self._missing = (counts == 0).to(context.device)
        self._any_missing = bool((counts == 0).any())  # read once here, not per batch
        self._pool = pool.to(context.device)
        self._pool_seconds, self._pool_builds = time.perf_counter() - start, 1
        missing = [n for n, m in zip(context.class_names, self._missing.tolist()) if m]
        print(f"generator pool: {len(flows)} flows of {k - len(missing)} classes from {self.pool_file}, "
              f"{per_class} slots per class" + (f"; {len(missing)} classes absent keep their flows: "
                                                 f"{_short(missing)}" if missing else ""), flush=True)

    @property
    def pool(self) -> FlowBatch | None:
        """The current pool. `sample`: `x (K * P, 3, L)`, class-major (class k at rows
        k*P..k*P+P-1); `vary`: `x (N * K, 3, L)`, the K variations of training flow r at
        rows r*K..r*K+K-1 (`rows` = r)."""
        return self._pool

    def _sample(self, labels: torch.Tensor, generator: torch.Generator) -> FlowBatch:
        """Flows of `labels (B,)` from the generator, in full precision: fresh flows are drawn
        inside `training_step`, under the Trainer's autocast with `--trainer.precision
        bf16-mixed`, which would round the generator's sizes and gaps to bf16; the
        augmentation's flows are data, not a training computation, so autocast is off here."""
        assert self._sampler is not None
        with torch.autocast(device_type=labels.device.type, enabled=False):
            return self._sampler.sample(labels, generator, **self.options)

    def _fill_pool(self, device: torch.device, generator: torch.Generator) -> None:
        """Sample `pool_per_class` flows of every class (`vary`: `variations_per_flow` of
        every training flow), in batches, with `generator`."""
        from tqdm.auto import tqdm

        assert self._sampler is not None
        if self.mode == "vary":
            start = time.perf_counter()
            assert self._train is not None
            self._pool = variation_pool(self._sampler, self._train.to(device), self.variations_per_flow,
                                        self._strengths, generator, self.options, self.sample_batch_size,
                                        self.progress)
            seconds = time.perf_counter() - start
            self._pool_seconds, self._pool_builds = self._pool_seconds + seconds, self._pool_builds + 1
            print(f"variation pool: {len(self._pool)} flows ({self.variations_per_flow} per training flow) from "
                  f"{self.ckpt} in {seconds:.1f} s", flush=True)
            return
        labels = torch.arange(self._num_classes, device=device).repeat_interleave(self.pool_per_class)  # (K*P,)
        start = time.perf_counter()
        parts = [self._sample(labels[i : i + self.sample_batch_size], generator)
                 for i in tqdm(range(0, len(labels), self.sample_batch_size), desc="generator pool",
                               unit="batch", disable=not self.progress, leave=False)]
        pool = FlowBatch.cat(parts).to(device)
        if not torch.equal(pool.labels, labels):
            raise RuntimeError(f"{self.ckpt}: the generator returned other labels than it was asked for")
        self._pool = pool
        seconds = time.perf_counter() - start
        self._pool_seconds += seconds
        self._pool_builds += 1
        print(f"generator pool: {len(pool)} flows ({self.pool_per_class} per class) from {self.ckpt} "
              f"in {seconds:.1f} s", flush=True)

    # -- the augmentation -----------------------------------------------------------------
    def target_labels(self, batch: FlowBatch, generator: torch.Generator) -> torch.Tensor:
        """`(B,)` classes to generate: the batch's (`same`) or uniform draws (`balanced`)."""
        if self.labels == "same":
            return batch.labels
        return torch.randint(0, self._num_classes, (len(batch),), generator=generator, device=batch.device)

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        if self._pool is not None:
            n_packets = self._pool.n_packets
        elif self._sampler is not None:
            n_packets = self._sampler.codec.n_packets
        else:
            raise RuntimeError("GeneratorAugmentation is used before setup(); train it through "
                               "ClassifierModule or call tsda.generators.base.prepare_augmentation")
        if batch.n_packets != n_packets:
            raise ValueError(f"the generator makes {n_packets} packets, the batch has {batch.n_packets}")
        if len(batch) == 0:
            return batch
        if self.mode == "vary":
            if self._pool is not None:
                return draw_from_pool(self._pool, self.variations_per_flow, batch, generator)
            values = self._strength_values
            if values is None or (isinstance(values, torch.Tensor) and values.device != batch.device):
                values = self._strength_values = strength_values(self._strengths, batch.device)  # once per run
            strength = draw_strengths(values, len(batch), generator)
            assert self._sampler is not None  # no pool: setup() loaded the sampler
            return vary(self._sampler, batch, strength, generator, self.options)
        labels = self.target_labels(batch, generator)  # (B,)
        if self._pool is None:
            return self._sample(labels, generator)
        offset = torch.randint(0, self._per_class, (len(batch),), generator=generator, device=batch.device)
        drawn = self._pool.index(labels * self._per_class + offset)
        if self._missing is None or not self._any_missing:  # None when no class is missing
            return drawn
        return select(~self._missing[labels], drawn, batch)  # absent classes keep the original flow


def _check_vary_options(pool_file: str, pool_per_class: int, labels: str) -> None:
    """Refuse the options `mode: vary` has no use for (with a `ValueError` naming them)."""
    if pool_file:
        raise ValueError("GeneratorAugmentation.mode vary varies flows with a generator (ckpt): a pool_file "
                         "holds finished flows, which cannot be varied")
    if pool_per_class:
        raise ValueError("GeneratorAugmentation.pool_per_class is for mode sample; mode vary pools "
                         "variations_per_flow variations of every training flow")
    if labels != "same":
        raise ValueError(f"GeneratorAugmentation.labels {labels!r} is for mode sample: a variation keeps the "
                         "class of its flow")


def _training_flows(context: AugmentContext, ckpt: str, n_packets: int) -> FlowBatch:
    """The training split's flows of `context` (for a variation pool), checked."""
    flows = context.train_flows
    if flows is None:
        raise TsdaError(f"augmentation checkpoint {ckpt}: variations_per_flow > 0 needs the training split's flows "
                        "(AugmentContext.train_flows: tsda.generators.base.prepare_augmentation(datamodule=...)); "
                        "or set variations_per_flow 0 (fresh variations per batch)")
    if flows.n_packets != n_packets:
        raise TsdaError(f"augmentation checkpoint {ckpt}: the generator makes {n_packets} packets, "
                        f"the training flows have {flows.n_packets}")
    return flows


def _short(names: list[str], k: int = 4) -> str:
    """`[a, b, c, d, ...] (K)` for messages."""
    shown = ", ".join(names[:k]) + (", ..." if len(names) > k else "")
    return f"[{shown}] ({len(names)})"
