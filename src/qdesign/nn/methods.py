"""Retraining methods: how the step of each quantized layer is set while the
float shadow weights are retrained (see docs/methods.md for formulas, sources
and measurements).

A method is used in three calls, the same in :func:`qdesign.nn.cells.retrain`
and in the benchmarks::

    method = METHODS[name]
    qmodel = method.prepare(to_quantized(model, bits))   # before the direct-quantization error
    res = fit(qmodel, data, cfg, seed=seed, epoch_start=method.hook(qmodel), keep_start=True)

``prepare`` converts the model in place (it does not change the forward pass:
every method starts from the L2-optimal steps of the float weights, so the
direct-quantization error is the same for all); the optimizer built by ``fit``
from ``model.parameters()`` then includes any parameter the method added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..core.registry import DEFAULT_METHOD  # noqa: F401 - re-exported
from ..quantize import to_learned, update_steps


@dataclass(frozen=True)
class RetrainMethod:
    """One retraining method.

    ``prepare(qmodel) -> qmodel``: run once on the output of ``to_quantized``.
    ``epoch_start(qmodel, epoch)``: run before each retraining epoch (1-based),
    or None.
    """

    name: str
    summary: str
    prepare: Callable[[nn.Module], nn.Module]
    epoch_start: Callable[[nn.Module, int], None] | None = None

    def hook(self, qmodel: nn.Module) -> Callable[[int], None] | None:
        """The ``epoch_start`` callback of :func:`qdesign.nn.train.fit` for ``qmodel``."""
        if self.epoch_start is None:
            return None
        start = self.epoch_start
        return lambda epoch: start(qmodel, epoch)


def _keep(qmodel: nn.Module) -> nn.Module:
    return qmodel


def _reestimate_after_first(qmodel: nn.Module, epoch: int) -> None:
    if epoch > 1:  # epoch 1 starts from the steps of the float weights
        update_steps(qmodel)


METHODS: dict[str, RetrainMethod] = {
    m.name: m
    for m in (
        RetrainMethod("fixed", "L2-optimal steps of the float weights, kept fixed; identity STE (the paper's)", _keep),
        RetrainMethod(
            "epoch",
            "L2-optimal steps re-estimated from the shadow weights at each epoch start; identity STE",
            _keep,
            _reestimate_after_first,
        ),
        RetrainMethod(
            "learned",
            "LSQ: step trained with the weights from the L2-optimal start; clipped weights get no gradient",
            to_learned,
        ),
    )
}


def get_method(name: str) -> RetrainMethod:
    """``METHODS[name]``, or a ValueError that lists the known names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown retraining method {name!r} (known: {', '.join(METHODS)})") from None
