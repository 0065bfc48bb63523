"""Retraining methods: how the step of each quantized layer is set while the
float shadow weights are retrained (see docs/methods.md for formulas, sources
and measurements).

A method is used in four calls, the same in ``cells.retrain`` and in
the benchmarks::

    method = METHODS[name]
    loss = method.loss(model, data, cfg)                  # the float network's outputs, once (or None)
    qmodel = method.prepare(to_quantized(model, bits))   # before the direct-quantization error
    res = fit(qmodel, data, cfg, seed=seed, epoch_start=method.hook(qmodel), keep_start=True, loss=loss)

``prepare`` converts the model in place (it does not change the forward pass:
every method starts from the L2-optimal steps of the float weights, so the
direct-quantization error is the same for all); the optimizer built by ``fit``
from ``model.parameters()`` then includes any parameter the method added (the
learned steps in their own parameter group, see :func:`qdesign.nn.train.param_groups`).
``cfg`` is the cell's retraining settings: a distilling method reads
``distill_temperature`` and ``distill_weight`` from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..core.registry import DEFAULT_METHOD  # noqa: F401 - re-exported
from ..quantize import to_learned, update_steps
from .data import Splits
from .train import logits

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def distill_loss(teacher_logits: torch.Tensor, temperature: float, weight: float) -> LossFn:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv 1503.02531)
    as a loss of :func:`qdesign.nn.train.fit`: ``(1 - a) CE(out, labels) + a T^2
    KL(p_T || softmax(out / T))`` with ``p_T = softmax(teacher_logits / T)``, one
    row of ``teacher_logits`` per training example (looked up by the batch's
    indices). The soft targets and their entropies are computed here once; the
    KL is the cross-entropy with ``p_T`` minus that entropy (same gradient, and a
    loss of 0 when the student matches the teacher)."""
    t, a = float(temperature), float(weight)
    if not t > 0 or not 0 <= a <= 1:
        raise ValueError(f"distillation needs temperature > 0 and 0 <= weight <= 1, got {t} and {a}")
    log_soft = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
    soft = log_soft.exp()
    entropy = -(soft * log_soft).sum(dim=1)

    def loss(out: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        kl = F.cross_entropy(out / t, soft[idx]) - entropy[idx].mean()
        if a == 1:
            return (t * t) * kl
        return (1 - a) * F.cross_entropy(out, labels) + (a * t * t) * kl

    return loss


@dataclass(frozen=True)
class RetrainMethod:
    """One retraining method.

    ``prepare(qmodel) -> qmodel``: run once on the output of ``to_quantized``.
    ``epoch_start(qmodel, epoch)``: run before each retraining epoch (1-based),
    or None. ``distill``: the training loss is :func:`distill_loss` with the
    float network as the teacher (see :meth:`loss`).
    """

    name: str
    summary: str
    prepare: Callable[[nn.Module], nn.Module]
    epoch_start: Callable[[nn.Module, int], None] | None = None
    distill: bool = False

    def loss(self, float_model: nn.Module, data: Splits, cfg: Mapping) -> LossFn | None:
        """The ``loss`` of :func:`qdesign.nn.train.fit` for this method: None
        (cross-entropy with the labels), or the distillation loss against
        ``float_model``'s outputs on ``data.x_train``, computed here once
        (evaluation mode, as :func:`qdesign.nn.train.evaluate` computes them;
        deterministic), with ``cfg['distill_temperature']`` and ``cfg['distill_weight']``."""
        if not self.distill:
            return None
        teacher = logits(float_model, data.x_train)
        return distill_loss(teacher, cfg["distill_temperature"], cfg["distill_weight"])

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
        RetrainMethod(
            "distill",
            "learned, trained against the float network's softened outputs (temperature) as well as the labels",
            to_learned,
            distill=True,
        ),
        RetrainMethod(
            "distill-fixed",
            "fixed, trained against the float network's softened outputs (temperature) as well as the labels",
            _keep,
            distill=True,
        ),
    )
}


def get_method(name: str) -> RetrainMethod:
    """``METHODS[name]``, or a ValueError that lists the known names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown retraining method {name!r} (known: {', '.join(METHODS)})") from None
