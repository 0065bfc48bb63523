"""Synthetic cell tables drawn from a known design law (forms, per-bits
penalties, seed noise, evaluation-set noise): what the law's fit must recover."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from qdesign.analysis import scaling as S

N_VAL, N_TEST = 6000, 10000  # validation and test examples (MNIST-sized)
WIDTHS = (8, 16, 32, 64, 128, 256)
BITS = (2, 3, 4, 6, 32)


def n_weights_of(width):
    """An FCDNN-like size: one hidden layer of width w between 784 inputs and 10 outputs."""
    return 794 * np.asarray(width)


LAWS = {
    "effsize": dict(
        E=0.02, a0=0.05, alpha=0.5, beta=math.nan, per_bits={2: math.log(0.5), 3: math.log(0.8), 4: -0.05, 6: 0.0}
    ),
    "penalty": dict(E=0.02, a0=0.05, alpha=0.6, beta=0.3, per_bits={2: 0.03, 3: 0.01, 4: 0.004, 6: 0.001}),
    "additive": dict(E=0.02, a0=0.05, alpha=0.5, beta=math.nan, per_bits={2: 0.02, 3: 0.008, 4: 0.003, 6: 0.0005}),
}


N0 = float(np.exp(np.mean(np.log(n_weights_of(WIDTHS)))))


def true_law(form="penalty", method="fixed") -> S.ScalingLaw:
    p = LAWS[form]
    return S.ScalingLaw(form, p["E"], p["a0"], p["alpha"], p["beta"], N0, p["per_bits"], (0, 0), method)


def synthetic(
    form="penalty", n_seeds=3, seed_sd=0.0, rng=None, widths=WIDTHS, bits=BITS, shift=(0.0, 0.0), method="fixed"
):
    """A study drawn from a known law: validation and test errors of each seed
    are the law plus a seed effect shared by both (sd ``seed_sd``) plus each
    set's own sampling noise; ``shift`` adds a common (val, test) offset, the
    two evaluation sets' own draw."""
    law = true_law(form)
    rows = []
    for w in widths:
        n = int(n_weights_of(w))
        for b in bits:
            p = float(law.predict(n, b))
            for s in range(n_seeds):
                e = rng.normal(0, seed_sd) if rng is not None and seed_sd else 0.0
                val = p + e + shift[0] + (rng.normal(0, math.sqrt(p * (1 - p) / N_VAL)) if rng is not None else 0.0)
                test = p + e + shift[1] + (rng.normal(0, math.sqrt(p * (1 - p) / N_TEST)) if rng is not None else 0.0)
                rows.append(
                    {
                        "study": "syn",
                        "model": "fcdnn",
                        "depth": 1,
                        "width": w,
                        "bits": b,
                        "method": None if b >= 32 else method,
                        "seed": s,
                        "n_weights": n,
                        "n_biases": w + 10,
                        "quantized_layers": 2,
                        "val_error": float(np.clip(val, 0, 1)),
                        "test_error": float(np.clip(test, 0, 1)),
                        "direct_test_error": math.nan if b >= 32 else float(np.clip(test + 0.01, 0, 1)),
                        "direct_val_error": math.nan if b >= 32 else float(np.clip(val + 0.01, 0, 1)),
                        "n_val": N_VAL,
                        "n_test": N_TEST,
                        "memory_bits_weights": n * b,
                        "memory_bits_total": n * b + 32 * (w + 10) + (64 if b < 32 else 0),
                    }
                )
    return pd.DataFrame(rows)
