"""What makes an encoded batch a set of valid flows, checked in one place.

Used by the augmentation tests and usable by generators' tests:

    problems = check_valid(batch, codec)      # [] when valid
    assert_valid(out, codec, like=batch)      # raises AssertionError listing problems
"""

from __future__ import annotations

import torch

from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch
from tsda.data.codec import FlowCodec


def check_valid(batch: FlowBatch, codec: FlowCodec | None = None, num_classes: int | None = None) -> list[str]:
    """Every way `batch` fails to hold valid flows (empty list when it is valid).

    Rules: `x` finite float; `1 <= lengths <= L`; on real packets size in [0, 1] (at most
    one MTU), direction exactly +1 or -1, iat >= 0; the first packet's iat 0; every value
    0 on padding (so padding only at the end); labels int64 (in [0, K) with
    `num_classes`); soft labels, when present, non-negative rows summing to 1. With a
    `codec`: `L == codec.n_packets` and the decoded gaps are finite.
    """
    x, lengths, problems = batch.x, batch.lengths, []
    if not x.is_floating_point():
        return [f"x must be floating point, got {x.dtype}"]
    if not torch.isfinite(x).all():
        problems.append("x holds NaN or inf")
    if lengths.dtype != torch.int64 or batch.labels.dtype != torch.int64:
        problems.append(f"lengths and labels must be int64, got {lengths.dtype} and {batch.labels.dtype}")
    if len(batch) == 0:
        return problems
    if ((lengths < 1) | (lengths > batch.n_packets)).any():
        problems.append(f"lengths outside [1, L={batch.n_packets}]: {lengths.min().item()}..{lengths.max().item()}")
    real = batch.mask()  # (B, L)
    size, direction, iat = x[:, SIZE], x[:, DIRECTION], x[:, IAT]
    if ((size < 0) | (size > 1))[real].any():
        problems.append("size outside [0, 1] on a real packet")
    if ((direction != 1) & (direction != -1))[real].any():
        problems.append("direction not +-1 on a real packet")
    if (iat < 0)[real].any():
        problems.append("negative iat on a real packet")
    if (iat[:, 0] != 0).any():
        problems.append("first packet's iat is not 0")
    if (x != 0).any(1)[~real].any():
        problems.append("non-zero value on padding (padding must be all zero, only at the end)")
    if num_classes is not None and ((batch.labels < 0) | (batch.labels >= num_classes)).any():
        problems.append(f"label outside [0, {num_classes})")
    soft = batch.soft_labels
    if soft is not None and (
        (soft < -1e-6).any() or not torch.allclose(soft.sum(1), torch.ones_like(soft[:, 0]), atol=1e-4)
    ):
        problems.append("soft labels are not distributions (non-negative, rows summing to 1)")
    if codec is not None:
        if batch.n_packets != codec.n_packets:
            problems.append(f"L = {batch.n_packets}, codec expects {codec.n_packets}")
        if not torch.isfinite(codec.gaps_from_iat(iat.double())).all():
            problems.append("iat too large to decode to a finite gap")
    return problems


def assert_valid(
    batch: FlowBatch,
    codec: FlowCodec | None = None,
    like: FlowBatch | None = None,
    keep_labels: bool = True,
    num_classes: int | None = None,
) -> None:
    """Raise `AssertionError` listing the problems of `batch`.

    With `like` (the input of an augmentation) also check that the batch size, `L`,
    dtype and device are kept and, with `keep_labels`, that labels are carried unchanged.
    """
    problems = check_valid(batch, codec, num_classes)
    if like is not None:
        if batch.x.shape != like.x.shape:
            problems.append(f"shape {tuple(batch.x.shape)} differs from the input's {tuple(like.x.shape)}")
        if batch.x.dtype != like.x.dtype or batch.device != like.device:
            problems.append("dtype or device differs from the input's")
        elif keep_labels and not torch.equal(batch.labels, like.labels):
            problems.append("labels were not carried")
    if problems:
        raise AssertionError("invalid flows: " + "; ".join(problems))
