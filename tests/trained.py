"""Small studies trained for real (digits), for tests that need finished cells."""

import numpy as np

from qdesign.core.config import validate_config
from qdesign.core.specs import float_spec, quant_spec
from qdesign.nn.cells import retrain, train_float
from qdesign.nn.data import prepare_dataset, write_prepared

from .conftest import tiny_study


def two_method_study(root):
    """``root``/s (``root`` a results folder) of a two-method study (fixed,
    learned), width 16, bits 2, seeds 0 and 1, with its summary and a frontier
    on which the two methods tie: {"dir", "data", "summary"}."""
    from qdesign.analysis.aggregate import aggregate

    data = root / "data" / "digits.pt"
    write_prepared(prepare_dataset("digits"), data)
    s = tiny_study(
        model={"type": "fcdnn", "depth": 2, "widths": [16]},
        bits=[2],
        seeds=[0, 1],
        retraining={"epochs": 2, "lr": 0.01, "batch_size": 64, "methods": ["fixed", "learned"]},
    )
    cfg = validate_config({"device": "cpu", "studies": {"s": s}})
    metrics = []
    for seed in (0, 1):
        fdir = root / "s" / "float" / f"w16-s{seed}"
        train_float(float_spec(cfg, "s", 16, seed), data, fdir)
        metrics.append(fdir / "metrics.parquet")
        for method in ("fixed", "learned"):
            qdir = root / "s" / method / "b2" / f"w16-s{seed}"
            retrain(quant_spec(cfg, "s", 16, 2, seed, method), data, fdir / "model.pt", qdir)
            metrics.append(qdir / "metrics.parquet")
    summary, _, frontier = aggregate(metrics)
    summary.to_parquet(root / "s" / "summary.parquet", index=False)
    means = summary.groupby(["width", "bits", "method"], as_index=False)[["test_error", "memory_bits_weights"]].mean()
    tie = means.assign(kind="pareto", budget_bits=np.nan, error=means["test_error"].min())  # every cell ties
    tie = tie.rename(columns={"memory_bits_weights": "memory_bits"})
    tie.drop(columns="test_error").to_parquet(root / "s" / "frontier.parquet", index=False)
    return {"dir": root / "s", "data": data, "summary": summary}
