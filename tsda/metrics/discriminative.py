"""Discriminative scores: how easily a fresh classifier tells synthetic flows from real ones.

    discriminative_score: gradient boosting (sklearn) on the flattened encoded flows plus
        the normalised length, balanced real/synthetic, trained on one half, scored on the
        other; `score = |accuracy - 0.5|`, 0 = indistinguishable, 0.5 = trivially told apart.
"""

from __future__ import annotations

import numpy as np
import torch

from tsda.data.batch import FlowBatch


def flat_features(batch: FlowBatch) -> np.ndarray:
    """`(B, 3L + 1)` flattened channels plus the normalised length."""
    x = batch.x.detach().cpu().flatten(1).double()  # (B, 3L)
    return torch.cat([x, batch.lengths.cpu().double()[:, None] / batch.n_packets], 1).numpy()


def discriminative_score(real: FlowBatch, synthetic: FlowBatch, seed: int = 0) -> dict[str, float]:
    """|accuracy - 0.5| of a fresh real-vs-synthetic classifier on held-out flows."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    n = min(len(real), len(synthetic))
    if n < 10:
        raise ValueError(f"discriminative score needs >= 10 flows of each, got {n}")
    rng = np.random.default_rng(seed)
    a = flat_features(real)[rng.permutation(len(real))[:n]]
    b = flat_features(synthetic)[rng.permutation(len(synthetic))[:n]]
    features = np.concatenate([a, b])
    is_real = np.concatenate([np.ones(n), np.zeros(n)])
    xa, xb, ya, yb = train_test_split(features, is_real, test_size=0.5, stratify=is_real, random_state=seed)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=seed).fit(xa, ya)
    accuracy = float((model.predict(xb) == yb).mean())
    return {"accuracy": accuracy, "score": abs(accuracy - 0.5), "n_per_source": int(n)}
