"""Labelling a generator's samples with a trained classifier (`tsda sample --label_with`).

An unconditional generator (`conditional: false`, trained without labels) draws flows of
no class in particular. A *labeller*, a trained `ClassifierModule` of the same classes
and codec, gives each drawn flow its predicted class and a confidence (its softmax
probability); per-class quotas are filled by rejection sampling: a flow is kept when its
confidence is at least `min_confidence` and its class still needs flows, until every
quota is filled or `max_draws` flows were drawn. Three routes (`route` of the report):

- `rejection`: an unconditional generator, unguided. The acceptance rate of class k is
  the share of all draws that the labeller assigns to k at the confidence.
- `guided`: an unconditional diffusion model with latent guidance (`latent_guidance_scale
  > 0`, `tsda.generators.diffusion.sampling`) toward the classes still short, by the model's stored guide or,
  when it has none (or `guide="labeller"`), by the labeller itself. A flow is kept when
  the labeller agrees with its target class at the confidence; the rate of class k is the
  share of the draws aimed at k that were.
- `conditional`: a conditional generator asked for the classes still short, its flows
  filtered as in `guided` (the labeller as a judge of the generator's labels).

The report (`label_samples`) gives per class the quota, the flows kept, the draws that
could have become the class (`drawn`), those that did (`eligible`) and their ratio
(`acceptance_rate`), and the classes not filled within `max_draws` (`unfilled`), so the
two ways of getting labelled flows from an unconditional diffusion model (rejection,
guidance) compare on the same numbers. Every draw comes from one `torch.Generator`
seeded with `seed`: the same seed gives the same flows, labels and report.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tsda.classifier.module import ClassifierModule
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.errors import TsdaError
from tsda.generators.base import GenerativeModule
from tsda.generators.guide import FrozenGuide
from tsda.lit.checkpoint import read_checkpoint
from tsda.seeds import seeded_generator

GuideChoice = Literal["auto", "model", "labeller"]
#: default `max_draws`: this many draws per flow asked for
DRAWS_PER_FLOW = 20


@dataclass
class Labeller:
    """A trained classifier that labels flows (eval mode, no gradients).

    Attributes:
        classifier: the `ClassifierModule`.
        path: its checkpoint (for messages and the output's `labeller` column).
    """

    classifier: ClassifierModule
    path: str

    @property
    def class_names(self) -> list[str]:
        return list(self.classifier.class_names)

    @property
    def guide(self) -> FrozenGuide:
        """The labeller as a latent guide (`encode`, `head`) on its device."""
        return FrozenGuide(self.classifier.net, self.classifier.hparams)

    @torch.no_grad()
    def label(self, batch: FlowBatch) -> tuple[np.ndarray, np.ndarray]:
        """`(B,)` int64 predicted classes and `(B,)` float64 confidences of `batch`."""
        probs = torch.softmax(self.classifier(batch.x.to(self.classifier.device)).double(), dim=1)  # (B, K)
        confidence, pred = probs.max(dim=1)
        return pred.cpu().numpy().astype(np.int64), confidence.cpu().numpy()


def _short(names: list[str], k: int = 4) -> str:
    return "[" + ", ".join(names[:k]) + (", ..." if len(names) > k else "") + f"] ({len(names)})"


def load_labeller(path: str, generator: GenerativeModule, flag: str = "--label_with") -> Labeller:
    """The classifier checkpoint `path`, checked against `generator`, on its device.

    The classifier's codec is that of the data it was trained on (the datamodule settings
    Lightning stores in the checkpoint); a checkpoint without them is checked by classes only.

    Raises:
        FileNotFoundError: no such file.
        TsdaError: not a classifier checkpoint, or other classes (names and order) or
            another codec than the generator's; the message names `flag` and the file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path}: no such checkpoint")
    ckpt = read_checkpoint(path)
    if GenerativeModule.CLASS_PATH_KEY in ckpt:
        raise TsdaError(
            f"{flag} {path}: a generator checkpoint ({ckpt[GenerativeModule.CLASS_PATH_KEY]}), "
            "not a classifier (ClassifierModule)"
        )
    try:
        classifier = ClassifierModule.load_frozen(path)
    except (TypeError, KeyError, RuntimeError) as exc:
        raise TsdaError(
            f"{flag} {path}: not a ClassifierModule checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    labeller = Labeller(classifier.to(generator.device), str(path))
    if labeller.class_names != list(generator.class_names):
        raise TsdaError(
            f"{flag} {path}: the classifier knows the classes {_short(labeller.class_names)}, the "
            f"generator {_short(list(generator.class_names))} (train both on the same classes, "
            "in the same order)"
        )
    data = ckpt.get("datamodule_hyper_parameters") or {}
    if "n_packets" in data:
        defaults = FlowCodec()
        codec = FlowCodec(
            n_packets=int(data["n_packets"]),
            mtu=float(data.get("mtu", defaults.mtu)),
            iat_unit=float(data.get("iat_unit", defaults.iat_unit)),
            iat_max=float(data.get("iat_max", defaults.iat_max)),
        )
        if codec != generator.codec:
            raise TsdaError(
                f"{flag} {path}: the classifier was trained on flows encoded as {codec}, the "
                f"generator makes {generator.codec} (set the same --data.n_packets/mtu/iat_*)"
            )
    return labeller


def guidance_options(
    model: GenerativeModule, labeller: Labeller, options: dict[str, Any], guide: GuideChoice = "auto"
) -> tuple[dict[str, Any], str | None]:
    """The sampling options with the guide of latent guidance chosen, and which guide
    (`model`, `labeller`, or None without guidance). `auto`: the model's stored guide when
    it has one, else the labeller.

    Raises:
        TsdaError: `guide` set without guidance; guidance for a generator without it
            (the cGAN); `guide="model"` for a model without a stored guide.
    """
    if guide not in ("auto", "model", "labeller"):
        raise TsdaError(f"--guide must be auto, model or labeller, got {guide!r}")
    if float(options.get("latent_guidance_scale") or 0.0) <= 0:
        if guide != "auto":
            raise TsdaError(f"--guide {guide} needs --latent_guidance_scale > 0")
        return options, None
    if "guide" not in inspect.signature(model.sample).parameters:
        raise TsdaError(
            f"--latent_guidance_scale: {type(model).__name__} has no sampling-time guidance (the diffusion model has)"
        )
    stored = getattr(model, "classifier", None) is not None
    chosen = ("model" if stored else "labeller") if guide == "auto" else guide
    if chosen == "model" and not stored:
        raise TsdaError(
            "--guide model: the generator holds no guide (trained without model.classifier_ckpt); use --guide labeller"
        )
    return ({**options, "guide": labeller.guide} if chosen == "labeller" else options), chosen


def _round_robin(remaining: np.ndarray) -> np.ndarray:
    """`(sum(remaining),)` classes, one of each class still short in turn: `[0, 1, 2, 0, 1, 0]`
    for remaining `[3, 2, 1]`."""
    classes = np.repeat(np.arange(len(remaining)), remaining)
    rank = np.concatenate([np.arange(r) for r in remaining]) if len(classes) else classes
    return classes[np.lexsort((classes, rank))]


def label_samples(
    model: GenerativeModule,
    labeller: Labeller,
    quotas: np.ndarray,
    *,
    seed: int = 0,
    batch_size: int = 1024,
    min_confidence: float = 0.0,
    max_draws: int | None = None,
    options: dict[str, Any] | None = None,
    guide: GuideChoice = "auto",
    progress: bool = False,
) -> tuple[FlowBatch, np.ndarray, dict[str, Any]]:
    """Fill `quotas (K,)` (flows per class) with labelled samples of `model`.

    Args:
        model: any generator; `labeller`: its `load_labeller`-checked classifier.
        seed: seeds the one generator of every draw.
        batch_size: flows per `sample` call.
        min_confidence: the least labeller confidence a kept flow has, in [0, 1].
        max_draws: flows drawn at most (default `DRAWS_PER_FLOW` x the quotas' sum).
        options: the generator's sampling options (e.g. `steps`, `latent_guidance_scale`).
        guide: the latent guide, see `guidance_options`.

    Returns:
        the kept flows on the CPU, grouped by class (labels: the labeller's), their
        confidences `(N,)`, and the report (see the module docstring).

    Raises:
        ValueError: bad quotas, `min_confidence`, `max_draws` or `batch_size`.
    """
    names = list(model.class_names)
    quotas = np.asarray(quotas, dtype=np.int64)
    if quotas.shape != (len(names),) or (quotas < 0).any() or quotas.sum() < 1:
        raise ValueError(f"quotas must be ({len(names)},) counts >= 0, not all 0; got {quotas.tolist()}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min_confidence must be in [0, 1], got {min_confidence}")
    max_draws = DRAWS_PER_FLOW * int(quotas.sum()) if max_draws is None else int(max_draws)
    if max_draws < 1 or batch_size < 1:
        raise ValueError(f"--max_draws and --batch_size must be >= 1, got {max_draws} and {batch_size}")
    options, guide_used = guidance_options(model, labeller, dict(options or {}), guide)
    targeted = model.conditional or guide_used is not None
    from tqdm.auto import tqdm

    g = seeded_generator(seed, model.device)
    remaining, drawn = quotas.copy(), 0
    aimed, eligible = np.zeros(len(names), np.int64), np.zeros(len(names), np.int64)
    kept: list[FlowBatch] = []
    confidences: list[np.ndarray] = []
    bar = tqdm(total=int(quotas.sum()), desc="labelled flows", unit="flow", disable=not progress)
    while remaining.sum() > 0 and drawn < max_draws:
        n = min(batch_size, max_draws - drawn)
        plan = _round_robin(remaining)[:n] if targeted else np.zeros(n, np.int64)  # (n,) targets
        batch = model.sample(torch.as_tensor(plan, device=model.device), g, **options)
        pred, confidence = labeller.label(batch)  # (n,), (n,)
        ok = confidence >= min_confidence
        if targeted:
            ok &= pred == plan
            aimed += np.bincount(plan, minlength=len(names))
        eligible += np.bincount(pred[ok], minlength=len(names))
        take = []
        for k in np.flatnonzero(remaining):
            rows = np.flatnonzero(ok & (pred == k))[: remaining[k]]
            take.append(rows)
            remaining[k] -= len(rows)
        rows = np.sort(np.concatenate(take)) if take else np.zeros(0, np.int64)
        index = torch.as_tensor(rows, device=batch.device)
        kept.append(batch.index(index).replace(labels=torch.as_tensor(pred[rows], device=batch.device)).to("cpu"))
        confidences.append(confidence[rows])
        drawn += len(plan)
        bar.update(len(rows))
    bar.close()
    out, confidence = FlowBatch.cat(kept), np.concatenate(confidences)
    order = torch.as_tensor(np.argsort(out.labels.numpy(), kind="stable"))
    route = "conditional" if model.conditional else ("guided" if guide_used else "rejection")
    classes = {}
    for k in np.flatnonzero(quotas):
        could = int(aimed[k]) if targeted else drawn
        classes[names[k]] = {
            "quota": int(quotas[k]),
            "kept": int(quotas[k] - remaining[k]),
            "drawn": could,
            "eligible": int(eligible[k]),
            "acceptance_rate": float(eligible[k] / could) if could else None,
        }
    report = {
        "route": route,
        "guide": guide_used,
        "labeller": labeller.path,
        "min_confidence": min_confidence,
        "max_draws": max_draws,
        "draws": drawn,
        "kept": len(out),
        "seed": seed,
        "classes": classes,
        "unfilled": [names[k] for k in np.flatnonzero(remaining)],
    }
    return out.index(order), confidence[order.numpy()], report


def format_report(report: dict[str, Any]) -> str:
    """The human lines of a `label_samples` report."""
    guide = f", guide {report['guide']}" if report["guide"] else ""
    lines = [
        (
            f"labelled by {report['labeller']} ({report['route']}{guide}, confidence >= "
            f"{report['min_confidence']:g}): {report['kept']} flows kept of {report['draws']} drawn"
        )
    ]
    for name, c in report["classes"].items():
        rate = "n/a" if c["acceptance_rate"] is None else f"{c['acceptance_rate']:.3f}"
        lines.append(
            f"  {name}: {c['kept']}/{c['quota']} kept, acceptance rate {rate} ({c['eligible']} of {c['drawn']} draws)"
        )
    if report["unfilled"]:
        lines.append(f"could not fill within --max_draws {report['max_draws']}: {report['unfilled']}")
    return "\n".join(lines)
