"""The generator's objectives in the co-trained classifier's latent space (`JointModule`).

On generated flows `fake (B, 3, L)` of `labels (B,)`, with `z = encode(fake) (B, D)`,
`logits = head(z) (B, K)` in the classifier's eval mode and the class regions `mu, sigma (K, D)`:

- `class`: the cross-entropy of the logits: flows the classifier recognises as their class.
  Maximised alone it pulls a generator onto what the classifier already knows (the easiest
  flows of each class), which is what joint training measured before this objective existed.
- `band`: informative flows instead of easy ones: the classifier's probability of the
  flow's class `p_y` is kept inside a band `[low, high]`, `relu(low - p_y) + relu(p_y - high)`:
  below `low` a flow is not recognisably of its class any more, above `high` it teaches the
  classifier nothing new. Hard but still class y.
- `latent`: the pull into the class region (`tsda.generators.gan.losses.latent_region`).
- `diversity`: the mode-seeking hinge of same-class pairs (`latent_diversity`).

Logged beside them, so a user can tell easy flows from informative ones: `gen_acc` (the
classifier's accuracy on them), `gen_p_class` (mean `p_y`) and `gen_region_distance` (mean
`mean_d ((z - mu_y) / sigma_y)^2`: about 1 inside a Gaussian class region, larger outside).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tsda.classifier.nets import FlowClassifier
from tsda.generators.gan import losses
from tsda.generators.regions import eval_mode


def check_band(band: tuple[float, float] | list[float]) -> tuple[float, float]:
    """`band` as `(low, high)` with `0 < low < high < 1`.

    Raises:
        ValueError: naming `model.band`.
    """
    values = tuple(float(v) for v in band)
    if len(values) != 2 or not 0.0 < values[0] < values[1] < 1.0:  # False for NaN
        raise ValueError(f"model.band must be two probabilities 0 < low < high < 1, got {list(band)}")
    return values[0], values[1]


def probability_band(logits: torch.Tensor, labels: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """`mean_b relu(low - p_b) + relu(p_b - high)` with `p_b` the softmax of `logits (B, K)` at
    `labels (B,)`: zero for every flow whose class probability lies in `[low, high]`."""
    p = F.softmax(logits, dim=1).gather(1, labels[:, None])[:, 0]  # (B,)
    return (F.relu(low - p) + F.relu(p - high)).mean()


def latent_objectives(
    net: FlowClassifier,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor,
    noise: torch.Tensor,
    band: tuple[float, float],
) -> dict[str, torch.Tensor]:
    """The terms above on `fake (B, 3, L)` of `labels (B,)` from `noise (B, Z)`, in `net`'s
    latent (eval mode, differentiable in `fake`), with class regions `mu, sigma (K, D)`."""
    with eval_mode(net):
        z = net.encode(fake)  # (B, D)
        logits = net.head(z)  # (B, K)
    s = sigma[labels]  # (B, D)
    with torch.no_grad():
        p = F.softmax(logits, dim=1).gather(1, labels[:, None])[:, 0]  # (B,)
        distance = (((z - mu[labels]) / s) ** 2).mean(dim=1)  # (B,)
    return {
        "class": losses.class_loss(logits, labels),
        "band": probability_band(logits, labels, *band),
        "latent": losses.latent_region(z, mu[labels], s),
        "diversity": losses.latent_diversity(z, noise, labels, s),
        "gen_acc": (logits.argmax(1) == labels).float().mean().detach(),
        "gen_p_class": p.mean(),
        "gen_region_distance": distance.mean(),
    }
