"""What the cGAN (`tsda.generators.gan.module.GANModule`) is conditioned on: the class, or nothing at all
(`conditional=False`: a generator trained without labels), and, with latent conditioning,
a guide latent drawn from a per-class bank of real training latents.

Unconditional training uses no label anywhere: the nets have no class embedding
(`tsda.generators.gan.nets`), guidance (which needs the class of every generated flow) is refused,
and the cVAE-GAN's fitted noise prior is one Gaussian over all training flows: the
`ClassNoisePrior` of one class (`ALL_FLOWS`), fitted to every batch relabelled 0
(`pooled`) and drawn from with every label 0 (`prior_labels`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from tsda.data.batch import FlowBatch

#: real training latents kept per class for latent-conditioned sampling
LATENT_BANK = 128
#: the one class of an unconditional generator's noise prior
ALL_FLOWS = "all flows"


def check_unconditional(
    conditional: bool, *, classifier_ckpt: str | None, w_class: float, w_latent: float, latent_conditioning: bool
) -> None:
    """An unconditional cGAN takes no guide: every guidance term needs each flow's class.

    Raises:
        ValueError: `conditional` is False and a guide option is set (naming them).
    """
    if conditional:
        return
    given = [
        name
        for name, on in (
            ("classifier_ckpt", bool(classifier_ckpt)),
            ("w_class", w_class > 0),
            ("w_latent", w_latent > 0),
            ("latent_conditioning", latent_conditioning),
        )
        if on
    ]
    if given:
        raise ValueError(
            f"model.conditional false trains without labels, so without a guide: unset "
            f"{', '.join('model.' + g for g in given)} (they need each flow's class)"
        )


def prior_classes(conditional: bool, num_classes: int) -> tuple[int, list[str] | None]:
    """Classes of the noise prior: `(K, None)` (the model's own), or `(1, [ALL_FLOWS])`."""
    return (num_classes, None) if conditional else (1, [ALL_FLOWS])


def prior_labels(labels: torch.Tensor, conditional: bool) -> torch.Tensor:
    """`(B,)` the noise prior's class of each requested label (all 0 when unconditional)."""
    return labels if conditional else torch.zeros_like(labels)


def pooled(loader: Iterable[FlowBatch]) -> Iterator[FlowBatch]:
    """The batches of `loader` with every label 0 (one class: all flows)."""
    for batch in loader:
        yield batch.replace(labels=torch.zeros_like(batch.labels))


@torch.no_grad()
def fill_bank(bank: torch.Tensor, bank_n: torch.Tensor, z: torch.Tensor, labels: torch.Tensor) -> None:
    """Append latents `z (B, D)` of `labels (B,)` to the banks `bank (K, M, D)` (filled up to
    `bank_n (K,)`) while room is left, in place."""
    size = bank.shape[1]
    for k in labels.unique().tolist():
        n = int(bank_n[k])
        rows = z[labels == k][: size - n]  # (<= free, D)
        bank[k, n : n + len(rows)] = rows
        bank_n[k] += len(rows)


def bank_latent(
    labels: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    bank: torch.Tensor,
    bank_n: torch.Tensor,
    generator: torch.Generator,
    scale: float = 1.0,
) -> torch.Tensor:
    """A conditioning latent per label: `(B, D)`.

    A stored real latent of the class (`mu + scale * (z - mu)`), or, for a class without
    stored latents, a draw from the class's diagonal Gaussian `mu + scale * sigma * eps`
    (`mu (K, D)`, `sigma (K, D)`, `bank (K, M, D)`, `bank_n (K,)`).
    """
    n = bank_n[labels]  # (B,)
    m = mu[labels]  # (B, D)
    eps = torch.randn(len(labels), mu.shape[1], generator=generator, device=mu.device)
    gauss = m + scale * sigma[labels] * eps  # (B, D)
    u = torch.rand(len(labels), generator=generator, device=mu.device)  # (B,)
    idx = (u * n).long().clamp_max(bank.shape[1] - 1)  # (B,) uniform in [0, n_k)
    stored = m + scale * (bank[labels, idx] - m)  # (B, D)
    return torch.where((n > 0)[:, None], stored, gauss)
