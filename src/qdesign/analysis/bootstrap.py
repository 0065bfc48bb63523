"""Resampling seeds: the uncertainty of seed means, for the read-off ECR and the
law's parameters.

A quantized network is retrained from the float network of the same seed, so
the cells of one width are paired: per width one multiset of seed labels is
drawn with replacement and used for every bits value of that width. Torch-free.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS
from .ecr import effective_compression_ratio

DEFAULT_LEVEL = 0.9


def seed_table(cells: pd.DataFrame, error: str) -> pd.DataFrame:
    """(width, n_weights, bits) x seed pivot of ``error``; float bits are 32."""
    df = pd.DataFrame(
        {
            "width": cells["width"].to_numpy() if "width" in cells.columns else cells["n_weights"].to_numpy(),
            "n_weights": cells["n_weights"].to_numpy(float),
            "bits": np.minimum(cells["bits"].to_numpy(float), FLOAT_BITS).astype(int),
            "error": cells[error].to_numpy(float),
            "seed": cells["seed"].to_numpy() if "seed" in cells.columns else 0,
        }
    )
    if "seed" not in cells.columns:
        df["seed"] = df.groupby(["n_weights", "bits"]).cumcount()
    return df.pivot_table(index=["width", "n_weights", "bits"], columns="seed", values="error", aggfunc="mean")


def boot_means(table: pd.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_cells) seed means of resampled tables, rows as in ``table``
    (:func:`seed_table`): per width one draw of seeds for all its cells; a cell
    missing every drawn seed keeps its own mean."""
    rng = np.random.default_rng(seed)
    err = table.to_numpy(float)
    present = np.isfinite(err)
    err0 = np.where(present, err, 0.0)
    means = np.nanmean(np.where(present, err, np.nan), axis=1)
    n_cells, n_seeds = err.shape
    width_of = pd.factorize(table.index.get_level_values("width"))[0]
    out = np.empty((n_boot, n_cells))
    for i in range(n_boot):
        w = np.zeros((n_cells, n_seeds))
        for j in range(width_of.max() + 1):
            rows = np.nonzero(width_of == j)[0]
            avail = np.nonzero(present[rows].any(axis=0))[0]
            w[rows] = np.bincount(rng.choice(avail, size=avail.size), minlength=n_seeds)
        w = w * present
        tot = w.sum(axis=1)
        out[i] = np.where(tot > 0, (w * err0).sum(axis=1) / np.where(tot > 0, tot, 1.0), means)
    return out


def readoff_ecr_intervals(
    summary: pd.DataFrame,
    n_boot: int = 200,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    reference_bits: int = FLOAT_BITS,
) -> pd.DataFrame:
    """Bootstrap interval of the read-off ECR per (width, bits): width, bits,
    ecr_lo, ecr_hi. The paper's ECR is read off test errors, and so is this."""
    if "width" not in summary.columns:
        raise ValueError("summary is missing required column: width")
    table = seed_table(summary, "test_error")
    draws = boot_means(table, n_boot, seed)
    base = table.index.to_frame(index=False)[["n_weights", "bits"]]
    ecrs = np.empty_like(draws)
    for i, means in enumerate(draws):
        res = effective_compression_ratio(base.assign(error=means), reference_bits=reference_bits, average_seeds=False)
        ecrs[i] = res["ecr"].to_numpy(float)
    q = (1 - level) / 2
    out = table.index.to_frame(index=False)[["width", "bits"]]
    out["ecr_lo"] = np.quantile(ecrs, q, axis=0)
    out["ecr_hi"] = np.quantile(ecrs, 1 - q, axis=0)
    return out
