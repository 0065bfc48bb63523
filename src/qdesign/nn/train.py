"""Training loop shared by float training and retraining with quantized weights.

Data live in memory as tensors (on the training device); mini-batches are index
slices of a seeded permutation, so there is no per-sample Python and no
DataLoader. The state of the epoch with the lowest validation error is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..core.constants import EVAL_BATCH
from ..core.errors import ConfigError, DivergedError
from ..core.registry import STEP_KEYS
from ..quantize.layers import frozen_weights
from ..quantize.lsq import learned_step_parameters
from .data import Splits
from .inference import forward


def pick_device(name: str) -> torch.device:
    """auto -> cuda when a GPU is visible, else cpu; cuda without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA GPU is visible to this job (set device: auto or cpu)")
    return torch.device(name)


def make_optimizer(params, cfg: Mapping, fused: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer; ``foreach`` (multi-tensor) updates also on CPU,
    measured 25% faster per step than the per-tensor default on a 3x1024 FCDNN.

    ``fused``: Adam/AdamW in torch's fused kernel instead (same update, other
    rounding; :func:`fit` uses it for models with learned steps, see there)."""
    name, lr, wd = cfg["optimizer"], float(cfg["lr"]), float(cfg["weight_decay"])
    kernel = {"fused": True} if fused else {"foreach": True}
    if name == "sgd":
        mom = float(cfg["momentum"])
        return torch.optim.SGD(params, lr=lr, momentum=mom, nesterov=mom > 0, weight_decay=wd, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, **kernel)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **kernel)
    raise ValueError(f"unknown optimizer {name!r}")


def param_groups(model: nn.Module, cfg: Mapping) -> list:
    """The optimizer's parameters: ``model.parameters()`` as one group, or, for
    a model with learned steps and a ``cfg`` with any of the step keys
    (``step_lr_factor``, ``step_weight_decay``; see the config schema), two
    groups: the other parameters with ``cfg``'s settings, then the learned steps
    with their own learning rate (``lr x step_lr_factor``) and weight decay. A
    missing step key means the weights' setting (factor 1, their weight decay)."""
    steps = learned_step_parameters(model)
    if not steps or not any(k in cfg for k in STEP_KEYS):
        return list(model.parameters())
    ids = {id(p) for p in steps}
    rest = [p for p in model.parameters() if id(p) not in ids]
    step_group = {
        "params": steps,
        "lr": float(cfg["lr"]) * float(cfg.get("step_lr_factor", 1.0)),
        "weight_decay": float(cfg.get("step_weight_decay", cfg["weight_decay"])),
    }
    return ([{"params": rest}] if rest else []) + [step_group]


def training_optimizer(model: nn.Module, cfg: Mapping) -> torch.optim.Optimizer:
    """The optimizer :func:`fit` trains ``model`` with: :func:`param_groups` of
    ``cfg`` in :func:`make_optimizer`, with the fused kernel for models with
    learned steps. Benchmarks that time a training step build it here too.

    LSQ gives clipped weights exact-zero gradients, and Adam's foreach sqrt of
    their zero second moments runs 5-7x slower than on other values on this CPU
    (its vectorised sqrt; a third of learned's step at 3x512, 2 bits); the fused
    kernel has no such case. Models without learned steps keep the foreach
    kernels, whose numbers the golden study pins bit for bit."""
    return make_optimizer(param_groups(model, cfg), cfg, fused=bool(learned_step_parameters(model)))


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based)."""
    if schedule == "constant" or epochs <= 1:
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return 0.1 ** sum(epoch >= m * epochs for m in (0.5, 0.75))
    raise ValueError(f"unknown schedule {schedule!r}")


def is_convolutional(model: nn.Module) -> bool:
    """Whether ``model`` has a convolution: what decides its layout and evaluation batch."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module, data: Splits) -> Splits:
    """Convolutional models train ~20% faster on CPU with NHWC tensors
    (measured: 3-block CNN, batch 128); fully-connected ones are unaffected."""
    if not is_convolutional(model):
        return data
    model.to(memory_format=torch.channels_last)
    fmt = dict(memory_format=torch.channels_last)
    return Splits(
        data.x_train.contiguous(**fmt),
        data.y_train,
        data.x_val.contiguous(**fmt),
        data.y_val,
        data.x_test.contiguous(**fmt),
        data.y_test,
        data.n_classes,
    )


def evaluation_layout(model: nn.Module, nchw: Iterable[str] = ()) -> nn.Module:
    """Give a network rebuilt from a cell's checkpoint the memory layout the
    cell evaluated it in, so that its convolutions run the same kernels and
    its logits are the cell's bit for bit (export verification): a CNN's
    layers in channels-last (:func:`use_channels_last`; quantized layers keep
    their float layer's layout, :func:`qdesign.quantize.to_quantized`), except
    the layers named in ``nchw`` (the checkpoint's ``nchw_layers``: quantized
    convolutions of cells retrained before quantized CNNs went channels-last,
    whose weights were made afresh in NCHW). The input goes in channels-last
    too (:func:`logits`)."""
    if is_convolutional(model):
        model.to(memory_format=torch.channels_last)
        for name in nchw:
            w = model.get_submodule(name).weight
            # strides too: a weight of one input channel is "contiguous" either way
            w.data = torch.empty_like(w.data, memory_format=torch.contiguous_format).copy_(w.data)
    return model


def nchw_layers(model: nn.Module) -> list[str]:
    """The convolutions of ``model`` whose weights are in NCHW order where a
    network rebuilt by :func:`evaluation_layout` would have them channels-last
    (strides compared: a weight of one input channel is "contiguous" in both
    layouts). A cell records them in its checkpoint; none in a cell's CNN since
    quantized CNNs went channels-last."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            nchw = torch.empty(m.weight.shape, device="meta")
            rebuilt = nchw.to(memory_format=torch.channels_last)
            if m.weight.stride() != rebuilt.stride() and m.weight.stride() == nchw.stride():
                out.append(name)
    return out


def eval_batch_size(model: nn.Module) -> int:
    """:data:`qdesign.core.constants.EVAL_BATCH` for this model's kind."""
    return EVAL_BATCH["conv" if is_convolutional(model) else "fc"]


@torch.inference_mode()
def logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """The outputs of ``model`` in eval mode, computed exactly as
    :func:`evaluate` computes them (its batches, its forward pass; a
    convolutional model's input in channels-last, as the cells hold it)."""
    batch_size = batch_size or eval_batch_size(model)
    if x.dim() == 4 and is_convolutional(model):
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    with frozen_weights(model):
        out = [forward(model, x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else forward(model, x)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """Classification error (fraction) of ``model`` in eval mode, without autograd,
    in batches of :data:`qdesign.core.constants.EVAL_BATCH` (why those sizes: there).
    The forward pass is :func:`qdesign.nn.inference.forward` (the model's numbers,
    with faster exact pooling and convolutions)."""
    batch_size = batch_size or eval_batch_size(model)
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    with frozen_weights(model):  # quantized layers: weights quantized once, not per batch
        for i in range(0, x.shape[0], batch_size):
            wrong += (forward(model, x[i : i + batch_size]).argmax(dim=1) != y[i : i + batch_size]).sum()
    model.train(was_training)
    return float(wrong) / max(1, x.shape[0])


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    before_update: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """One pass over (x, y) in the order of a seeded permutation, mini-batches
    as index slices of tensors already on the device. Returns (mean loss,
    training error); both are accumulated on the device, read once.

    ``loss_fn(outputs, labels, indices)`` replaces the cross-entropy with the
    labels (``indices``: the batch's rows of ``x``, for per-example targets
    such as a teacher's outputs); ``before_update()`` runs before each
    optimizer step (a per-update learning-rate warm-up)."""
    model.train()
    n = x.shape[0]
    perm = torch.randperm(n, generator=gen).to(x.device)
    loss_sum = torch.zeros((), device=x.device)
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        out = model(xb)
        loss = F.cross_entropy(out, yb) if loss_fn is None else loss_fn(out, yb, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if before_update is not None:
            before_update()
        opt.step()
        loss_sum += loss.detach() * idx.numel()
        wrong += (out.detach().argmax(dim=1) != yb).sum()
    return float(loss_sum) / n, float(wrong) / n


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    best_val_error: float
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    diverged: str | None = None  # why training counts as diverged (only with fail_on_divergence off), else None


LOSS_GROWTH = 10.0
"""A training loss above this many times its start (or than ln(classes), the
loss of guessing, when the start is lower) is divergence, finite or not."""
LOSS_PROBE = 4096
"""Training examples (the first of the shuffled split) on which the loss of the
starting and the final weights is compared, in eval mode: one forward pass each."""
LOSS_END_MARGIN, LOSS_END_FLOOR = 0.05, 0.01
"""The final weights' probe loss may exceed the start's by this fraction plus
this many nats (noise of the last steps, and of a start that is already
nearly 0) before training counts as having ended above its start."""


@torch.inference_mode()
def probe_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of ``model`` in eval mode on the first :data:`LOSS_PROBE`
    examples of (x, y); touches no random state, so training is unchanged."""
    return float(F.cross_entropy(logits(model, x[:LOSS_PROBE]).float(), y[:LOSS_PROBE]))


def _weights_finite(model: nn.Module) -> bool:
    """One pass over the parameters and buffers, read once."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def chance_level(error: float, y: torch.Tensor, n_classes: int, margin: float = 0.02) -> bool:
    """Whether ``error`` on labels ``y`` is no better than guessing: within
    ``margin`` of uniform guessing (1 - 1/n_classes), or not below the error of
    always predicting the most frequent class."""
    counts = torch.bincount(y.cpu(), minlength=n_classes)
    majority_error = 1.0 - float(counts.max()) / max(1, int(counts.sum()))
    return error >= min(1.0 - 1.0 / n_classes - margin, majority_error)


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(
    model: nn.Module,
    data: Splits,
    cfg: Mapping,
    *,
    seed: int,
    log: Callable[[str], None] = print,
    epoch_start: Callable[[int], None] | None = None,
    keep_start: bool = False,
    start_val_error: float | None = None,
    label: str = "training",
    setting: str = "training",
    fail_on_divergence: bool = True,
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` on ``data.x_train`` for ``cfg['epochs']`` epochs.

    ``epoch_start(epoch)`` runs before each epoch (used to re-estimate
    quantization steps). With ``keep_start`` the starting weights count as
    epoch 0 in the best-validation selection (retraining never reports worse
    than direct quantization on validation data); ``start_val_error`` is the
    caller's evaluation of those starting weights, if it has one. ``loss``:
    the training loss ``loss(outputs, labels, indices)`` (default: cross-entropy
    with the labels; see :func:`train_epoch`). Learned steps get their own
    parameter group (:func:`param_groups`) and, with ``cfg['step_warmup_epochs']``,
    a learning rate that rises linearly from 0 over that many epochs of updates.

    Divergence raises :class:`DivergedError` naming ``label`` (the cell), the
    epoch and ``setting`` (the config section of ``cfg``, e.g.
    ``studies.S.retraining``): a non-finite loss or non-finite weights after an
    epoch; an epoch's training loss above :data:`LOSS_GROWTH` times its start;
    or final weights whose loss on a fixed probe of training examples ends
    above the starting weights' (:func:`probe_loss`). A diverged network is
    never recorded as a result, and a retrained one never silently falls back
    to its epoch 0. With ``fail_on_divergence`` False (a study that means it)
    a finite divergence is logged as a WARNING and returned in
    ``FitResult.diverged`` instead; non-finite training always raises.
    """
    epochs, bs = int(cfg["epochs"]), int(cfg["batch_size"])
    opt = training_optimizer(model, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(int(seed))
    x, y = data.x_train, data.y_train
    opt_out = f"{setting.rsplit('.', 1)[0]}.fail_on_divergence" if "." in setting else "fail_on_divergence"
    advice = f"lower {setting}.lr (now {cfg['lr']:g}), momentum or weight_decay"
    diverged = None

    def divergence(epoch: int, what: str) -> None:
        nonlocal diverged
        msg = f"{label} diverged in epoch {epoch}/{epochs} ({what})"
        if fail_on_divergence:
            raise DivergedError(f"{msg}; {advice}, or set {opt_out}: false to record such cells")
        diverged = diverged or msg
        log(f"WARNING: {msg}; kept because {opt_out} is false, flagged (column diverged)")

    start_loss = probe_loss(model, x, y) if epochs > 0 else math.nan
    loss_limit = LOSS_GROWTH * max(start_loss, math.log(max(2, data.n_classes)))
    extra = {} if loss is None else {"loss_fn": loss}
    warmup = float(cfg.get("step_warmup_epochs", 0.0)) * math.ceil(x.shape[0] / bs)  # in updates
    updates = 0
    # the steps' own group: param_groups splits only to give them one, last
    step_group = opt.param_groups[-1] if len(opt.param_groups) > 1 and warmup > 0 else None

    def warm_up() -> None:  # the steps' group only, on top of the epoch's schedule factor
        nonlocal updates
        updates += 1
        step_group["lr"] = base_lrs[-1] * factor * min(1.0, updates / warmup)

    best_state, best_epoch, best_val = None, 0, math.inf
    if keep_start or epochs == 0:
        best_val = evaluate(model, data.x_val, data.y_val) if start_val_error is None else start_val_error
        best_state = _snapshot(model)
        log(f"epoch 0/{epochs} val_err {best_val:.4f} (start)")
    history = []  # per-epoch loss and errors, kept in FitResult for callers and tests
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        te = time.perf_counter()
        factor = lr_factor(cfg["schedule"], epoch - 1, epochs)
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * factor
        if epoch_start is not None:
            epoch_start(epoch)
        hooks = {**extra, "before_update": warm_up} if step_group is not None and updates < warmup else extra
        train_loss, train_err = train_epoch(model, opt, x, y, bs, gen, **hooks)
        val_err = evaluate(model, data.x_val, data.y_val)
        if not math.isfinite(train_loss) or not _weights_finite(model):
            what = f"loss is {train_loss}" if not math.isfinite(train_loss) else "weights are not finite"
            raise DivergedError(f"{label} diverged in epoch {epoch}/{epochs} ({what}); {advice}")
        if train_loss > loss_limit and diverged is None:
            divergence(epoch, f"training loss {train_loss:.4g}, more than {LOSS_GROWTH:g}x its start {start_loss:.4g}")
        if val_err < best_val:
            best_val, best_epoch, best_state = val_err, epoch, _snapshot(model)
        history.append(
            dict(epoch=epoch, loss=train_loss, train_error=train_err, val_error=val_err, lr=base_lrs[0] * factor)
        )
        log(
            f"epoch {epoch}/{epochs} loss {train_loss:.4f} train_err {train_err:.4f} "
            f"val_err {val_err:.4f} lr {base_lrs[0] * factor:.3g} {time.perf_counter() - te:.2f}s"
        )
    if epochs > 0 and diverged is None:
        end_loss = probe_loss(model, x, y)
        if not end_loss <= start_loss * (1 + LOSS_END_MARGIN) + LOSS_END_FLOOR:
            divergence(epochs, f"its loss ended at {end_loss:.4g}, above its start {start_loss:.4g}")
    if best_state is None:  # no epoch beat an infinite error (validation error is finite): not reached
        best_state, best_epoch = _snapshot(model), len(history)
        best_val = evaluate(model, data.x_val, data.y_val)
    return FitResult(best_state, best_epoch, best_val, len(history), time.perf_counter() - t0, history, diverged)
