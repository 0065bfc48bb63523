"""Design advice under a weight-memory budget: the best trained cell, and the law's best (width, bits).

The trained grid answers "which of the networks I trained fits"; the scaling
law (:mod:`qdesign.analysis.scaling`) answers "which network should I train", over a
continuous width range and any bits 1..8.  Memory as a function of width comes
from the study table itself: the number of weights (and biases) of both model
families is a polynomial of degree <= 2 in the width, fitted exactly on the
trained widths, so no model code (and no torch) is needed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS
from ..core.errors import ConfigError, UserError
from .scaling import ScalingLaw, bootstrap, law_from_table

__all__ = ["SizeModel", "design_table", "format_bits", "parse_budget", "recommend", "size_model"]

_UNITS = {
    "": 1,
    "b": 1,
    "bit": 1,
    "bits": 1,
    "B": 8,
    "byte": 8,
    "bytes": 8,
    "kbit": 10**3,
    "Mbit": 10**6,
    "Gbit": 10**9,
    "Kibit": 2**10,
    "Mibit": 2**20,
    "Gibit": 2**30,
    "kB": 8 * 10**3,
    "MB": 8 * 10**6,
    "GB": 8 * 10**9,
    "KiB": 8 * 2**10,
    "MiB": 8 * 2**20,
    "GiB": 8 * 2**30,
}
_BUDGET_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([A-Za-z]*)\s*$")


def parse_budget(text) -> int:
    """A memory budget in bits, from ``"65536"``, ``"64KiB"``, ``"1.5 MB"``, ``"2e5 bits"``...

    Units are case-sensitive: ``b``/``bit(s)`` are bits, ``B``/``byte(s)`` bytes;
    ``kB MB GB`` are powers of 1000 bytes, ``KiB MiB GiB`` powers of 1024 bytes;
    ``kbit Mbit Gbit`` / ``Kibit Mibit Gibit`` the same for bits.  No unit means
    bits.  Fractions of a bit are rounded down; the budget must be >= 1 bit.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = _BUDGET_RE.match(str(text))
        if not m or m.group(3) not in _UNITS:
            raise ConfigError(f"budget {text!r} is not a memory size: use e.g. 65536, 64KiB, 1.5MB or 2e5bits")
        value = float(f"{m.group(1)}e{m.group(2) or 0}")  # inf when huge: rejected below
        unit = m.group(3)
    bits = value * _UNITS[unit]
    if not math.isfinite(bits):
        raise ConfigError(f"budget {text!r} is too large to be a memory size (beyond a float's range)")
    if bits < 1:
        raise ConfigError(f"budget {text!r} must be at least 1 bit")
    return math.floor(bits + 1e-9)


def format_bits(bits: float) -> str:
    """``524288`` -> ``"524,288 bits (64 KiB)"``: the unit a reader thinks in, beside the exact count."""
    b = float(bits)
    by = b / 8
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if by >= scale:
            return f"{b:,.0f} bits ({by / scale:.4g} {suffix})"
    return f"{b:,.0f} bits ({by:.4g} B)"


# --------------------------------------------------------------------------
# Memory as a function of width
# --------------------------------------------------------------------------


class SizeModel:
    """n_weights(width) and n_biases(width) of one depth, exact polynomials of degree <= 2."""

    def __init__(self, depth, widths, n_weights, n_biases=None, quantized_layers=None):
        w = np.asarray(widths, float)
        self.depth = depth
        self.widths = np.unique(w)
        self.nw = _exact_poly(w, np.asarray(n_weights, float), "n_weights")
        self.nb = None if n_biases is None else _exact_poly(w, np.asarray(n_biases, float), "n_biases")
        self.q_layers = 0 if quantized_layers is None else int(np.max(quantized_layers))

    def n_weights(self, width) -> np.ndarray:
        return np.polyval(self.nw, np.asarray(width, float))

    def memory_bits(self, width, bits, memory: str = "weights") -> np.ndarray:
        """Weights at ``bits`` each (32 for float); ``total`` adds 32-bit biases and steps."""
        b = np.asarray(bits, float)
        per = np.where(b >= FLOAT_BITS, FLOAT_BITS, b)
        mem = self.n_weights(width) * per
        if memory == "total":
            if self.nb is None:
                raise ValueError("total memory needs n_biases in the table")
            mem = mem + FLOAT_BITS * np.polyval(self.nb, np.asarray(width, float))
            mem = mem + np.where(b >= FLOAT_BITS, 0, FLOAT_BITS * self.q_layers)
        return mem

    def max_width(self, budget_bits: float, bits, memory: str = "weights", cap: float = 1e7) -> float:
        """Largest real width whose memory fits the budget (0 when not even width 1 fits)."""
        lo, hi = 1.0, 2.0
        if self.memory_bits(lo, bits, memory) > budget_bits:
            return 0.0
        while hi < cap and self.memory_bits(hi, bits, memory) <= budget_bits:
            lo, hi = hi, hi * 2
        for _ in range(60):  # memory grows with width: bisection
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.memory_bits(mid, bits, memory) <= budget_bits else (lo, mid)
        return lo


def _exact_poly(w: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
    """Lowest-degree (<= 2) polynomial through all (w, y) pairs; ValueError if none is exact."""
    n_unique = np.unique(w).size
    for deg in range(min(2, n_unique - 1) + 1):
        coef = np.polyfit(w, y, deg)
        if np.all(np.abs(np.polyval(coef, w) - y) <= 1e-6 * np.maximum(np.abs(y), 1.0)):
            return coef
    raise ValueError(f"{name} is not a polynomial of degree <= 2 in width on the trained widths")


def size_model(summary: pd.DataFrame) -> dict:
    """One :class:`SizeModel` per depth in the study table."""
    depth = summary["depth"] if "depth" in summary.columns else pd.Series(0, index=summary.index)
    out = {}
    for d, g in summary.groupby(depth, sort=True):
        out[d] = SizeModel(
            d,
            g["width"],
            g["n_weights"],
            g["n_biases"] if "n_biases" in g.columns else None,
            g["quantized_layers"] if "quantized_layers" in g.columns else None,
        )
    return out


# --------------------------------------------------------------------------
# Recommendation
# --------------------------------------------------------------------------


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} not found: run the study's aggregate step first")
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        raise UserError(f"cannot read {path} ({type(exc).__name__}); rerun the aggregate step") from None


def _load_law(study_dir: Path, summary: pd.DataFrame) -> ScalingLaw:
    path = study_dir / "scaling.parquet"
    if path.is_file():
        return law_from_table(_read(path))
    return bootstrap(summary, n_boot=100, seed=0)


def design_table(
    law: ScalingLaw,
    sizes: dict,
    budget_bits: float,
    memory: str = "weights",
    bits_values=range(1, 9),
    include_float: bool = True,
) -> pd.DataFrame:
    """Per depth and bits: the largest integer width that fits, its memory and predicted error (with interval)."""
    rows = []
    bits_all = list(bits_values) + ([FLOAT_BITS] if include_float else [])
    for depth, sm in sizes.items():
        for b in bits_all:
            w = math.floor(sm.max_width(budget_bits, b, memory))
            if w < 1:
                continue
            n = float(sm.n_weights(w))
            rows.append(
                {
                    "depth": depth,
                    "bits": b,
                    "width": w,
                    "n_weights": n,
                    "memory_bits": float(sm.memory_bits(w, b, memory)),
                    "predicted": float(law.predict(n, b)),
                }
            )
    df = pd.DataFrame(rows, columns=["depth", "bits", "width", "n_weights", "memory_bits", "predicted"])
    if len(df) and law.boot:
        lo, hi = law.predict_interval(df["n_weights"].to_numpy(), df["bits"].to_numpy())
        df["lo"], df["hi"] = lo, hi
    else:
        df["lo"] = df["hi"] = np.nan
    return df.sort_values(["predicted", "memory_bits", "bits"], kind="stable").reset_index(drop=True)


def _g_note(bits, trained_bits) -> str:
    q = [b for b in trained_bits if b < FLOAT_BITS]
    return "interpolated" if q and q[0] < int(bits) < q[-1] else "extrapolated"


def _bits_name(b) -> str:
    return "float" if int(b) >= FLOAT_BITS else f"{int(b)} bit{'s' if int(b) != 1 else ''}"


def recommend(study_dir, budget_bits: int, memory: str = "weights", bits_values=range(1, 9)) -> str:
    """Text advice for one study under a memory budget (bits): trained cell and law design.

    Reads ``summary.parquet`` (required) and ``scaling.parquet`` (when
    present; otherwise the law is fitted here) from ``study_dir``.
    """
    if memory not in ("weights", "total"):
        raise ConfigError(f"memory must be 'weights' or 'total', got {memory!r}")
    study_dir = Path(study_dir)
    summary = _read(study_dir / "summary.parquet")
    mem_col = f"memory_bits_{memory}"
    need = ["width", "bits", "n_weights", "test_error", mem_col]
    missing = [c for c in need if c not in summary.columns]
    if missing:
        raise UserError(f"{study_dir / 'summary.parquet'} lacks column(s) {', '.join(missing)}")
    name = str(summary["study"].iloc[0]) if "study" in summary.columns else study_dir.name
    lines = [f"Study {name}: budget {format_bits(budget_bits)} of {memory} memory."]

    keys = [c for c in ("depth", "width", "bits") if c in summary.columns]
    cells = (
        summary.groupby(keys, sort=True)
        .agg(error=("test_error", "mean"), std=("test_error", "std"), n=("test_error", "count"), mem=(mem_col, "mean"))
        .reset_index()
    )
    fits = cells[cells["mem"] <= budget_bits].sort_values(["error", "mem", "bits"], kind="stable")
    if fits.empty:
        lines.append(f"Trained: no trained cell fits (smallest needs {format_bits(cells['mem'].min())}).")
    else:
        c = fits.iloc[0]
        spread = f" ± {100 * c['std']:.2f}" if c["n"] > 1 and np.isfinite(c["std"]) else ""
        lines.append(
            f"Trained: best cell that fits is width {int(c['width'])}, {_bits_name(c['bits'])}: "
            f"{100 * c['error']:.2f}%{spread} test error (mean{' ± std' if spread else ''} of "
            f"{int(c['n'])} seed(s)), {format_bits(c['mem'])}."
        )

    law = _load_law(study_dir, summary)
    table = design_table(law, size_model(summary), budget_bits, memory, bits_values)
    if table.empty:
        lines.append("Law: no width >= 1 fits this budget at any bits value.")
        return "\n".join(lines)
    best = table.iloc[0]
    w_lo, w_hi = int(summary["width"].min()), int(summary["width"].max())
    trained_bits = sorted({int(b) for b in summary["bits"]})
    level = round(100 * law.level)
    iv = f" ({level}% interval {100 * best['lo']:.2f}-{100 * best['hi']:.2f}%)" if np.isfinite(best["lo"]) else ""
    lines.append(
        f"Law: best design is width {int(best['width'])}, {_bits_name(best['bits'])}: predicted "
        f"{100 * best['predicted']:.2f}%{iv}, {format_bits(best['memory_bits'])}."
    )
    notes = []
    if not w_lo <= best["width"] <= w_hi:
        notes.append(f"width {int(best['width'])} is outside the trained widths {w_lo}-{w_hi} (extrapolation)")
    if int(best["bits"]) not in trained_bits:
        notes.append(
            f"{_bits_name(best['bits'])} was not trained: its g is {_g_note(best['bits'], trained_bits)} "
            f"({law.g_form} g; trained: {', '.join(_bits_name(b) for b in trained_bits)})"
        )
    if notes:
        lines.append("Caution: " + "; ".join(notes) + ".")
    lines.append("Per bits (largest width that fits):")
    for r in table.sort_values("bits").itertuples():
        flags = [] if w_lo <= r.width <= w_hi else ["width extrapolated"]
        if int(r.bits) not in trained_bits:
            flags.append(f"g {_g_note(r.bits, trained_bits)}")
        flag = f"  * {', '.join(flags)}" if flags else ""
        iv = f" [{100 * r.lo:.2f}, {100 * r.hi:.2f}]" if np.isfinite(r.lo) else ""
        lines.append(f"  {_bits_name(r.bits):>8}: width {r.width:>6}, {100 * r.predicted:.2f}%{iv}{flag}")
    return "\n".join(lines)
