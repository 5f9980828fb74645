"""`GeneratorAugmentation`: a trained generator behind the augmentation protocol.

Each training batch gets, per flow, a freshly generated flow of the same class
(`sample(batch.labels, generator)`), so a cGAN or diffusion checkpoint plugs into
`ClassifierModule(augmentation=...)` like any hand-crafted augmentation:

    model:
      class_path: tsda.lit.classifier.ClassifierModule
      init_args:
        augmentation:
          class_path: tsda.augment.generator.GeneratorAugmentation
          init_args: {ckpt: runs/fgnet_cgan/checkpoints/last.ckpt}
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tsda.augment.base import Augmentation, Family
from tsda.data.batch import FlowBatch
from tsda.lit.generative import GenerativeModule, load_generative


class GeneratorAugmentation(Augmentation):
    """Replace each flow by a generated flow of its class.

    Args:
        ckpt: a generator checkpoint (any `GenerativeModule`, found by `load_generative`).
        options: keyword options of the generator's `sample` (e.g. `{"steps": 20}`).

    The checkpoint is loaded on first use, on the batch's device; the module is not an
    `nn.Module` attribute of the classifier, so it never enters the classifier's checkpoint.
    """

    family: ClassVar[Family] = "generator"
    alters: ClassVar[dict[str, float]] = {"size": 1.0, "direction": 1.0, "iat": 1.0}

    def __init__(self, ckpt: str, options: dict[str, Any] | None = None) -> None:
        if not ckpt:
            raise ValueError("GeneratorAugmentation.ckpt must name a checkpoint")
        self.ckpt = ckpt
        self.options = dict(options or {})
        self._model: GenerativeModule | None = None

    def model(self, device: torch.device) -> GenerativeModule:
        if self._model is None:
            self._model = load_generative(self.ckpt, map_location=device)
        elif self._model.device != device:
            self._model.to(device)
        return self._model

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        model = self.model(batch.device)
        if batch.n_packets != model.codec.n_packets:
            raise ValueError(f"the generator makes {model.codec.n_packets} packets, the batch has "
                             f"{batch.n_packets}")
        if len(batch) == 0:
            return batch
        return model.sample(batch.labels, generator, **self.options)
