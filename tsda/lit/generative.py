"""The contract every generator module (cGAN, diffusion, joint) fulfils.

`tsda sample`, `tsda evaluate`, the fidelity callback and `GeneratorAugmentation` talk
to generators only through this contract, so each works for every generator.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import lightning as L
import torch

from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec


class GenerativeModule(L.LightningModule):
    """Base of generator LightningModules.

    Subclasses save `num_classes`, `class_names` and the codec settings (`n_packets`,
    `mtu`, `iat_unit`, `iat_max`) in their hparams so that a checkpoint alone can sample
    and decode flows.
    """

    #: generators have no validation score to early-stop on; the last checkpoint is kept
    monitor: ClassVar[tuple[str, str] | None] = None

    @property
    def class_names(self) -> list[str]:
        names = self.hparams.get("class_names")
        return list(names) if names else [str(i) for i in range(self.hparams.num_classes)]

    @property
    def codec(self) -> FlowCodec:
        h = self.hparams
        return FlowCodec(n_packets=h.get("n_packets", 20), mtu=h.get("mtu", 1460.0),
                         iat_unit=h.get("iat_unit", 1e-3), iat_max=h.get("iat_max", 10.0))

    @abstractmethod
    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator, **options: Any) -> FlowBatch:
        """Valid encoded flows of the given classes.

        Args:
            labels: `(B,)` int64 classes to generate, on the module's device.
            generator: the only source of randomness (same seed -> same flows).
            options: sampler-specific settings (e.g. diffusion `steps`, `sampler`,
                `cfg_scale`, `latent_guidance_scale`); unknown options raise `TypeError`.

        Returns:
            `FlowBatch` with `x (B, 3, L)` snapped by `FlowCodec.snap` (valid flows),
            `labels` = the requested labels.
        """
