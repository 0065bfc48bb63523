"""Cell metrics rows, as a finished cell writes them, for the aggregate's tests."""

import numpy as np
import pandas as pd


def cell(width, bits, seed, error, direct=np.nan, study="s"):
    n_w = 100 * width
    return {
        "study": study,
        "dataset": "digits",
        "model": "fcdnn",
        "depth": 2,
        "width": width,
        "bits": bits,
        "seed": seed,
        "n_weights": n_w,
        "n_biases": 2 * width + 10,
        "memory_bits_weights": n_w * bits,
        "memory_bits_total": n_w * bits + 32 * (2 * width + 10),
        "test_error": error,
        "val_error": error,
        "direct_test_error": direct,
        "direct_val_error": direct,
        "steps": [] if bits == 32 else [0.1, 0.2],
        "job_seconds": 1.0,
    }


def write(tmp_path, rows):
    paths = []
    for i, r in enumerate(rows):
        p = tmp_path / f"c{i}.parquet"
        pd.DataFrame([r]).to_parquet(p)
        paths.append(p)
    return paths
