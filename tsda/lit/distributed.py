"""DDP for modules that train several parts, one backward each, per step.

The cGAN and the joint module use manual optimisation: each step runs a critic backward,
a generator backward (and the joint module a classifier backward), and each backward
leaves the parameters of the other parts without a gradient (they are toggled off or not
in the graph; during the joint module's classifier warm-up the generator and critic get
none at all). DDP's reducer, as `--trainer.strategy ddp` builds it, waits for a gradient of
every parameter in each backward and fails at the next one. The remedy is DDP's search
for unused parameters (`find_unused_parameters=True`: a walk over the autograd graph per
backward that marks the others ready). A module under manual optimisation needs it
(in tsda that means one backward per part), unless it says otherwise with the class
attribute `ddp_unused_parameters = False` (or asks for it with `True`): `tsda fit` then turns a plain `ddp` (`ddp_spawn`,
`ddp_fork`, `ddp_notebook`) into its `*_find_unused_parameters_true` variant
(`strategy_for`), and a DDP strategy built without it (e.g. a `DDPStrategy` class path in a
config) is refused at fit start, naming `--trainer.strategy` (`check_unused_parameters`).
"""

from __future__ import annotations

from typing import Any

from torch.nn.parallel import DistributedDataParallel

from tsda.errors import TsdaError

#: the named plain DDP strategies and their variants with the unused-parameter search
WITH_UNUSED = {name: f"{name}_find_unused_parameters_true" for name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")}


def needs_unused_parameters(module: Any) -> bool:
    """Whether the LightningModule `module` needs DDP's unused-parameter search: its
    `ddp_unused_parameters` when set, else whether it optimises manually."""
    declared = getattr(module, "ddp_unused_parameters", None)
    return bool(declared) if declared is not None else not getattr(module, "automatic_optimization", True)


def strategy_for(module: Any, strategy: Any) -> Any:
    """The Trainer strategy for `module`: a named plain DDP strategy becomes its
    unused-parameter variant when the module needs it; anything else is returned as is."""
    if needs_unused_parameters(module) and isinstance(strategy, str) and strategy in WITH_UNUSED:
        return WITH_UNUSED[strategy]
    return strategy


def check_unused_parameters(module: Any) -> None:
    """At fit start (the model is wrapped by then): refuse a module that needs the
    unused-parameter search inside a DDP wrapper built without it.

    Raises:
        TsdaError: naming `--trainer.strategy` and the value to use.
    """
    trainer = getattr(module, "_trainer", None)
    wrapped = getattr(getattr(trainer, "strategy", None), "model", None)
    if (
        needs_unused_parameters(module)
        and isinstance(wrapped, DistributedDataParallel)
        and not wrapped.find_unused_parameters
    ):
        raise TsdaError(
            f"{type(module).__name__} runs one backward per part each step (manual optimisation), "
            "so under DDP it needs the search for unused parameters: use --trainer.strategy ddp "
            "(tsda fit turns it on) or --trainer.strategy ddp_find_unused_parameters_true, or a "
            "DDPStrategy with find_unused_parameters: true"
        )
