"""Discriminative scores: how easily a fresh classifier tells synthetic flows from real ones.

    discriminative_score: gradient boosting (sklearn) on the flattened encoded flows plus
        the normalised length, balanced real/synthetic, trained on one half, scored on the
        other; `score = |accuracy - 0.5|`, 0 = indistinguishable, 0.5 = trivially told apart.
    feature_giveaways: the same score from one feature at a time (length, direction share,
        size / direction / iat at each packet position): what gives synthetic flows away.
The field's post-hoc GRU discriminator (TimeGAN, Diffusion-TS) is a trained network, run by
`tsda evaluate` (`tsda/commands/tstr.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tsda.data.batch import DIRECTION, FlowBatch


def flat_features(batch: FlowBatch) -> np.ndarray:
    """`(B, 3L + 1)` flattened channels plus the normalised length."""
    x = batch.x.detach().cpu().flatten(1).double()  # (B, 3L)
    return torch.cat([x, batch.lengths.cpu().double()[:, None] / batch.n_packets], 1).numpy()


def _balanced(real: np.ndarray, synthetic: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` rows of each (n = the smaller count, seeded draw) and the is-real target `(2n,)`."""
    n = min(len(real), len(synthetic))
    if n < 10:
        raise ValueError(f"discriminative score needs >= 10 flows of each, got {n}")
    rng = np.random.default_rng(seed)
    a, b = real[rng.permutation(len(real))[:n]], synthetic[rng.permutation(len(synthetic))[:n]]
    return np.concatenate([a, b]), np.concatenate([np.ones(n), np.zeros(n)])


def held_out_accuracy(features: np.ndarray, is_real: np.ndarray, seed: int = 0, max_iter: int = 100) -> float:
    """Accuracy on the held-out half of a fresh gradient-boosting classifier (sklearn)
    trained on the other half (stratified) of `features (N, F)` with targets `(N,)`."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    xa, xb, ya, yb = train_test_split(features, is_real, test_size=0.5, stratify=is_real, random_state=seed)
    model = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed).fit(xa, ya)
    return float((model.predict(xb) == yb).mean())


def discriminative_score(real: FlowBatch, synthetic: FlowBatch, seed: int = 0) -> dict[str, float]:
    """|accuracy - 0.5| of a fresh real-vs-synthetic classifier on held-out flows."""
    features, is_real = _balanced(flat_features(real), flat_features(synthetic), seed)
    accuracy = held_out_accuracy(features, is_real, seed)
    return {"accuracy": accuracy, "score": abs(accuracy - 0.5), "n_per_source": int(len(is_real) // 2)}


def binned_accuracy(values: np.ndarray, is_real: np.ndarray, train: np.ndarray, bins: int = 256) -> float:
    """Held-out accuracy of the best classifier of one feature by its value bin: bins are
    the training half's quantiles (an exact value shared by many flows, such as a fixed
    first-packet size, keeps a bin of its own), each bin predicts its training majority.

    Args:
        values: `(N,)` the feature; is_real: `(N,)` 0/1 targets; train: `(N,)` bool, the
            training half (the rest is scored).
    """
    edges = np.unique(np.quantile(values[train], np.linspace(0, 1, bins + 1)))
    which = np.searchsorted(edges, values, side="right")  # (N,) bin index, 0 .. len(edges)
    n_bins = len(edges) + 1
    real_count = np.bincount(which[train], weights=is_real[train], minlength=n_bins)
    total = np.bincount(which[train], minlength=n_bins)
    predict = real_count * 2 >= np.maximum(total, 1)  # (n_bins,) majority (ties and empty: real)
    test = ~train
    return float((predict[which[test]] == (is_real[test] > 0.5)).mean())


def feature_giveaways(real: FlowBatch, synthetic: FlowBatch, seed: int = 0, top: int = 8) -> dict[str, Any]:
    """Which single features give synthetic flows away: the held-out `|accuracy - 0.5|` of a
    classifier that sees ONE feature only (`binned_accuracy`), for the flow's length, its
    share of server-to-client packets, and the size, direction and iat at each packet
    position (`(L,)` lists; at positions past a flow's end the value is the padding 0, so
    lengths leak into late positions). `top` lists the most telling features first."""
    names = ["length", "direction_share"] + [
        f"{c}[{i}]" for c in ("size", "direction", "iat") for i in range(real.n_packets)
    ]

    def columns(batch: FlowBatch) -> np.ndarray:  # (B, 2 + 3L), in the order of `names`
        x = batch.x.detach().cpu().double()  # (B, 3, L)
        mask = batch.mask().cpu()
        share = ((x[:, DIRECTION] < 0) & mask).sum(1).double() / batch.lengths.cpu().clamp_min(1).double()
        return torch.cat([batch.lengths.cpu().double()[:, None], share[:, None], x.flatten(1)], 1).numpy()

    features, is_real = _balanced(columns(real), columns(synthetic), seed)
    half = np.random.default_rng(seed).permutation(len(is_real)) < len(is_real) // 2  # (2n,) train half
    scores = {name: abs(binned_accuracy(features[:, j], is_real, half) - 0.5) for j, name in enumerate(names)}
    per_position = {c: [scores[f"{c}[{i}]"] for i in range(real.n_packets)] for c in ("size", "direction", "iat")}
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:top]
    return {
        "length": scores["length"],
        "direction_share": scores["direction_share"],
        **per_position,
        "top": [{"feature": k, "score": v} for k, v in ranked],
    }
