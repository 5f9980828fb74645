"""Fidelity of synthetic flows to real ones, per feature: pure functions of encoded batches.

Every metric works on encoded flows (`FlowBatch`, the codec's units), so all features live
on comparable scales: size = bytes / MTU in [0, 1], iat = the codec's log-scaled gap (1.0 =
10 s), direction share = fraction of server-to-client packets of a flow, length = real
packets / L.

    marginals: per feature, over all flows and per class, Wasserstein-1 (`w1`, scipy) and
        Jensen-Shannon distance (`js`, base 2, in [0, 1], on 50-bin histograms; lengths on
        integer bins); `mean_per_class` averages over classes present in both sets.
    size_curves: per class, the mean size at each packet position; `mean_abs_diff` of the
        real and synthetic curves (over classes and positions).

The discriminative scores live in `tsda.metrics.discriminative`, set distances in latent
space (Frechet, PRDC, memorisation) in `tsda.metrics.distances`, the plots in
`tsda.metrics.fidelity_plots`; `tsda evaluate` (`tsda/commands/evaluate.py`) runs them all.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch

FEATURES = ("size", "iat", "direction_share", "length")
N_BINS = 50


# -- marginals ---------------------------------------------------------------------------
def flow_features(batch: FlowBatch) -> dict[str, np.ndarray]:
    """Per-packet (`size`, `iat` after the first packet) and per-flow (`direction_share`,
    `length`) values of an encoded batch, in codec units (see the module docstring)."""
    x = batch.x.detach().cpu()
    mask = batch.mask().cpu()  # (B, L)
    lengths = batch.lengths.cpu().clamp_min(1).double()
    down = ((x[:, DIRECTION] < 0) & mask).sum(1).double()  # (B,) server-to-client packets
    return {
        "size": x[:, SIZE][mask].double().numpy(),
        "iat": x[:, IAT, 1:][mask[:, 1:]].double().numpy(),
        "direction_share": (down / lengths).numpy(),
        "length": (batch.lengths.cpu().double() / batch.n_packets).numpy(),
    }


def _bins(feature: str, a: np.ndarray, b: np.ndarray, n_packets: int) -> np.ndarray:
    if feature == "length":
        return (np.arange(n_packets + 2) - 0.5) / n_packets
    top = max(1.0, float(np.max(a, initial=0.0)), float(np.max(b, initial=0.0)))
    return np.linspace(0.0, top, N_BINS + 1)


def distribution_distances(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> dict[str, float | None]:
    """Wasserstein-1 and base-2 Jensen-Shannon distance of two samples (None if one is empty)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    if len(a) == 0 or len(b) == 0:
        return {"w1": None, "js": None}
    ha, _ = np.histogram(a, bins=bins)
    hb, _ = np.histogram(b, bins=bins)
    return {"w1": float(wasserstein_distance(a, b)), "js": float(jensenshannon(ha, hb, base=2))}


def _features_distances(fa: dict[str, np.ndarray], fb: dict[str, np.ndarray], n_packets: int) -> dict[str, Any]:
    return {f: distribution_distances(fa[f], fb[f], _bins(f, fa[f], fb[f], n_packets)) for f in FEATURES}


def marginal_distances(real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str]) -> dict[str, Any]:
    """W1 and JS distance per feature: `overall`, `per_class` (by name) and the mean over
    classes present in both sets (`mean_per_class`)."""
    if real.n_packets != synthetic.n_packets:
        raise ValueError(f"real flows have {real.n_packets} packets, synthetic {synthetic.n_packets}")
    n_packets = real.n_packets
    out: dict[str, Any] = {"overall": _features_distances(flow_features(real), flow_features(synthetic), n_packets)}
    per_class: dict[str, Any] = {}
    for k, name in enumerate(class_names):
        ra, sb = real.index(real.labels == k), synthetic.index(synthetic.labels == k)
        if len(ra) and len(sb):
            per_class[name] = _features_distances(flow_features(ra), flow_features(sb), n_packets)
    out["per_class"] = per_class
    out["mean_per_class"] = {
        f: {
            m: float(np.mean([c[f][m] for c in per_class.values() if c[f][m] is not None])) if per_class else None
            for m in ("w1", "js")
        }
        for f in FEATURES
    }
    return out


def size_curves(batch: FlowBatch, num_classes: int) -> np.ndarray:
    """`(K, L)` mean encoded size at each position over the class's flows that have a packet
    there (NaN where none)."""
    x = batch.x[:, SIZE].detach().cpu().double()  # (B, L)
    mask = batch.mask().cpu().double()  # (B, L)
    onehot = torch.nn.functional.one_hot(batch.labels.cpu(), num_classes).double()  # (B, K)
    total = onehot.T @ (x * mask)  # (K, L)
    count = onehot.T @ mask  # (K, L)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).numpy()


def size_curve_distance(real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str]) -> dict[str, Any]:
    k = len(class_names)
    diff = np.abs(size_curves(real, k) - size_curves(synthetic, k))  # (K, L)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_class = np.nanmean(diff, axis=1)
    return {
        "mean_abs_diff": float(np.nanmean(diff)) if np.isfinite(diff).any() else None,
        "per_class": {n: float(v) for n, v in zip(class_names, per_class) if np.isfinite(v)},
    }
