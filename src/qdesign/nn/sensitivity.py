"""Layer-wise sensitivity: how much one layer's word length costs on its own.

For a float network, each weight layer in turn is quantized (its L2-optimal
step, :func:`qdesign.quantize.l2_optimal_step`) at each candidate word length
while every other layer stays float, and the validation loss and error and the
test error are recorded next to the float network's. No retraining: cheap
(layers x bits evaluations), cached per float network, and the input of the
bit allocation (:mod:`qdesign.analysis.allocation`), which reads only validation
columns so that no design choice ever sees the test set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

from ..quantize import l2_optimal_step, quantize
from ..quantize.layers import weight_modules
from .inference import forward
from .train import eval_batch_size

COLUMNS = [
    "study",
    "width",
    "seed",
    "layer",
    "layer_name",
    "n_weights",
    "bits",
    "step",
    "val_loss",
    "val_error",
    "test_error",
    "d_val_loss",
    "d_val_error",
    "d_test_error",
    "float_hash",
]


@torch.inference_mode()
def loss_and_error(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, classification error) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    batch = eval_batch_size(model)
    for i in range(0, x.shape[0], batch):
        out = forward(model, x[i : i + batch])
        loss += F.cross_entropy(out, y[i : i + batch], reduction="sum").double()
        wrong += (out.argmax(dim=1) != y[i : i + batch]).sum()
    model.train(was_training)
    n = max(1, x.shape[0])
    return float(loss) / n, float(wrong) / n


def layer_sensitivity(model: torch.nn.Module, data, bits: Sequence[int]) -> pd.DataFrame:
    """One row per (weight layer, bits): that layer alone quantized, the others
    float. ``data`` has x_val, y_val, x_test, y_test. Columns ``d_*`` are the
    increases over the float network. The model is restored before returning."""
    base_loss, base_err = loss_and_error(model, data.x_val, data.y_val)
    _, base_test = loss_and_error(model, data.x_test, data.y_test)
    rows = []
    for index, (name, layer) in enumerate(weight_modules(model)):
        original = layer.weight.detach().clone()
        try:
            for b in sorted(int(b) for b in bits):
                step = l2_optimal_step(original.cpu(), b)
                with torch.no_grad():
                    layer.weight.copy_(quantize(original, b, torch.tensor(step, dtype=original.dtype)))
                val_loss, val_err = loss_and_error(model, data.x_val, data.y_val)
                _, test_err = loss_and_error(model, data.x_test, data.y_test)
                rows.append(
                    {
                        "layer": index,
                        "layer_name": name,
                        "n_weights": int(original.numel()),
                        "bits": b,
                        "step": float(step),
                        "val_loss": val_loss,
                        "val_error": val_err,
                        "test_error": test_err,
                        "d_val_loss": val_loss - base_loss,
                        "d_val_error": val_err - base_err,
                        "d_test_error": test_err - base_test,
                    }
                )
        finally:
            with torch.no_grad():
                layer.weight.copy_(original)
    return pd.DataFrame(rows)


def costs_from_table(table: pd.DataFrame, candidate_bits: Sequence[int]) -> tuple[list[dict[int, float]], list[int]]:
    """Per layer {bits: validation-loss increase} and its weights, for
    :func:`qdesign.analysis.allocation.allocate`; a missing (layer, bits) is an error."""
    costs, n_weights = [], []
    for layer, rows in table.groupby("layer", sort=True):
        have = dict(zip(rows["bits"].astype(int), rows["d_val_loss"].astype(float)))
        bad = sorted(b for b, c in have.items() if not math.isfinite(c))
        if bad:  # a NaN would make every comparison of the allocation false: a silently arbitrary pattern
            raise ValueError(f"sensitivity table has a non-finite loss increase for layer {layer} at {bad} bits")
        missing = sorted(set(int(b) for b in candidate_bits) - set(have))
        if missing:
            raise ValueError(f"sensitivity table lacks layer {layer} at {missing} bits")
        costs.append({int(b): have[int(b)] for b in candidate_bits})
        n_weights.append(int(rows["n_weights"].iloc[0]))
    return costs, n_weights


def read_sensitivity(path: str | Path, float_hash: str | None = None) -> pd.DataFrame:
    """A sensitivity file; if ``float_hash`` is given it must be of that network.
    An unreadable file, or one without the columns the allocation reads, is one
    line naming it; only a file under ``results/`` is met with "delete it and rerun"."""
    from ..core.errors import CheckpointError  # noqa: PLC0415
    from ..core.io import produced_by_pipeline  # noqa: PLC0415

    advice = (
        "delete it and rerun its sensitivity job" if produced_by_pipeline(path) else "check that this is the right file"
    )
    try:
        table = pd.read_parquet(path)
    except Exception as exc:
        what = type(exc).__name__
        raise CheckpointError(f"cannot read sensitivity table {path} ({what}); {advice}") from None
    need = ("layer", "n_weights", "bits", "d_val_loss") + (("float_hash",) if float_hash is not None else ())
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise CheckpointError(
            f"{path} is not a sensitivity table of this version (no column {', '.join(missing)}); {advice}"
        )
    if float_hash is not None and set(table["float_hash"]) != {float_hash}:
        raise CheckpointError(
            f"{path} was computed for another float network (stale sensitivity table: rerun its sensitivity job)"
        )
    return table
