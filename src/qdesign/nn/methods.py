"""Retraining methods: how the step of each quantized layer is set while the
float shadow weights are retrained (see docs/methods.md for formulas, sources
and measurements).

A method is used in four calls, the same in :func:`qdesign.nn.cells.retrain`
and in the benchmarks::

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

from ..core.errors import DivergedError
from ..core.registry import DEFAULT_METHOD  # noqa: F401 - re-exported
from ..quantize import to_learned, update_steps
from .data import Splits
from .train import logits

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _DistillLoss(torch.autograd.Function):
    """``(1 - a) CE(z, y) + a T^2 KL(p || softmax(z / T))`` in one autograd node.

    Inputs per batch: the logits ``z`` (B x C), the labels, and ``rows`` = [``scaled
    = a T^2 p`` | ``const = a T^2 H(p)``] (per example, computed once; the loss is
    ``-((1 - a) log softmax(z)_y + <scaled, log softmax(z / T)> + const)``, batch mean). The gradient
    is closed-form, ``((1 - a) softmax(z) + a T softmax(z / T) - (1 - a) onehot(y)
    - scaled / T) / B``: a few small kernels each way instead of autograd's ~20
    (measured, batch 128, under load: about 0.6 ms less per step than the
    composition of ``F.cross_entropy`` and ``F.kl_div``; docs/methods.md)."""

    @staticmethod
    def forward(ctx, z, labels, rows, t, a):
        scaled, const = rows[:, :-1], rows[:, -1]
        ls1 = F.log_softmax(z, dim=1)
        ls2 = ls1 if t == 1 else F.log_softmax(z / t, dim=1)
        hard = ls1.gather(1, labels[:, None]).sum()
        value = -((1 - a) * hard + (scaled * ls2).sum() + const.sum()) / z.shape[0]
        ctx.save_for_backward(ls1, ls2, labels, scaled)
        ctx.t, ctx.a = t, a
        return value

    @staticmethod
    def backward(ctx, grad):
        ls1, ls2, labels, scaled = ctx.saved_tensors
        t, a = ctx.t, ctx.a
        if t == 1:
            g = ls1.exp().mul_(1 - a + a * t)
        else:
            g = ls1.exp().mul_(1 - a).add_(ls2.exp(), alpha=a * t)
        g.sub_(scaled, alpha=1 / t)
        g.scatter_add_(1, labels[:, None], torch.full_like(ls1[:, :1], -(1 - a)))
        return g.mul_(grad / ls1.shape[0]), None, None, None, None


def distill_loss(teacher_logits: torch.Tensor, temperature: float, weight: float) -> LossFn:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv 1503.02531)
    as a loss of :func:`qdesign.nn.train.fit`: ``(1 - a) CE(out, labels) + a T^2
    KL(p_T || softmax(out / T))`` with ``p_T = softmax(teacher_logits / T)``, one
    row of ``teacher_logits`` per training example (looked up by the batch's
    indices). The soft targets and their entropies are computed here once (the
    KL is the cross-entropy with ``p_T`` minus its entropy: a loss of 0 when the
    student matches the teacher); ``a = 0`` is exactly ``F.cross_entropy``."""
    t, a = float(temperature), float(weight)
    if not t > 0 or not 0 <= a <= 1:
        raise ValueError(f"distillation needs temperature > 0 and 0 <= weight <= 1, got {t} and {a}")
    if a == 0:
        return lambda out, labels, _idx: F.cross_entropy(out, labels)
    log_soft = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
    soft = log_soft.exp()
    scaled = (a * t * t) * soft
    const = -(a * t * t) * (soft * log_soft).sum(dim=1, keepdim=True)  # a T^2 H(p)
    rows = torch.cat([scaled, const], dim=1)  # one lookup per batch

    def loss(out: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return _DistillLoss.apply(out, labels, rows[idx], t, a)

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
        if not bool(torch.isfinite(teacher).all()):
            raise DivergedError("the float network's outputs on the training data are not finite: no teacher")
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
