"""The paper's four findings, measured on a study's tables (markdown output).

(a) the error gap between float and retrained 2-bit networks, small vs large;
(b) the effective compression ratio of each bits value (ECR > 1: at equal
    accuracy the quantized network needs less weight memory);
(c) how much of the direct-quantization loss retraining recovers;
(d) which bits lie on the memory-vs-error frontier at each budget.

Used by ``python -m qdesign findings`` and to write docs/reproduction.md; reads
only the summary, ECR and frontier tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS

MIN_LOSS = 0.005  # direct-quantization loss (0.5 points) below which "recovered" is not computed


def _pct(x: float) -> str:
    return "n/a" if pd.isna(x) else f"{100 * x:.2f}%"


def _bits_label(b) -> str:
    return "float" if int(b) >= FLOAT_BITS else f"{int(b)}-bit"


def gap_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per width and bits: mean float, direct and retrained test error over seeds,
    and the share of the direct-quantization loss that retraining recovers."""
    fl = summary[summary.bits >= FLOAT_BITS].groupby("width")["test_error"].mean().rename("float_error")
    q = (
        summary[summary.bits < FLOAT_BITS]
        .groupby(["width", "bits"])
        .agg(retrained=("test_error", "mean"), direct=("direct_test_error", "mean"))
        .reset_index()
    )
    q = q.join(fl, on="width")
    q["gap"] = q["retrained"] - q["float_error"]
    loss = q["direct"] - q["float_error"]
    # a share of a loss is only meaningful where there is one: 0.5 points or more
    big = loss >= MIN_LOSS
    q["recovered"] = np.where(big, (q["direct"] - q["retrained"]) / loss.where(big), np.nan)
    return q


def finding_a(summary: pd.DataFrame, bits: int = 2) -> str:
    q = gap_table(summary)
    q = q[q.bits == bits].sort_values("width")
    lines = [f"| width | float | {bits}-bit retrained | gap (points) |", "|---:|---:|---:|---:|"]
    for r in q.itertuples():
        lines.append(f"| {r.width} | {_pct(r.float_error)} | {_pct(r.retrained)} | {100 * r.gap:+.2f} |")
    return "\n".join(lines)


def finding_b(ecr: pd.DataFrame) -> str:
    q = ecr[ecr.bits < FLOAT_BITS]
    lines = [
        "| bits | ECR median over widths | min | max | widths with ECR > 1 | bounds |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for b, g in q.groupby("bits"):
        bounds = g["ecr_bound"].dropna().value_counts().to_dict()
        btxt = ", ".join(f"{v} {k}" for k, v in sorted(bounds.items())) or "none"
        lines.append(
            f"| {int(b)} | {g['ecr'].median():.2f} | {g['ecr'].min():.2f} | {g['ecr'].max():.2f} | "
            f"{int((g['ecr'] > 1).sum())} of {len(g)} | {btxt} |"
        )
    return "\n".join(lines)


def finding_c(summary: pd.DataFrame) -> str:
    q = gap_table(summary)
    lines = [
        "| bits | direct - float (points, median over widths) | retrained - float | "
        "loss recovered (median over widths with >= 0.5 points of loss) |",
        "|---:|---:|---:|---:|",
    ]
    for b, g in q.groupby("bits"):
        rec = g["recovered"].dropna()
        rtxt = _recovered(rec)
        lines.append(
            f"| {int(b)} | {100 * (g['direct'] - g['float_error']).median():+.2f} | "
            f"{100 * g['gap'].median():+.2f} | {rtxt} |"
        )
    return "\n".join(lines)


def _recovered(shares: pd.Series) -> str:
    """The median share of the loss recovered, over how many widths, and what a share above 100% means."""
    n = len(shares)
    if not n:
        return "no loss to recover"
    med = shares.median()
    beyond = "; above 100%: retrained beats float" if med > 1 else ""
    return f"{_pct(med)} ({n} width{'s' if n != 1 else ''}{beyond})"


def finding_d(frontier: pd.DataFrame) -> str:
    f = frontier[frontier.kind == "budget"].dropna(subset=["bits"])
    lines = ["| budget (KiB of weights) | best width | bits | test error |", "|---:|---:|---:|---:|"]
    for r in f.itertuples():
        lines.append(f"| {r.budget_bits / 8192:.3g} | {int(r.width)} | {_bits_label(r.bits)} | {_pct(r.error)} |")
    pareto = frontier[frontier.kind == "pareto"]
    counts = pareto["bits"].map(_bits_label).value_counts()
    lines.append("")
    lines.append("Pareto-optimal cells by bits: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return "\n".join(lines)


def report(study_dir: str | Path) -> str:
    """Markdown of the four findings for one study folder (summary/ecr/frontier.parquet)."""
    d = Path(study_dir)
    summary = pd.read_parquet(d / "summary.parquet")
    ecr = pd.read_parquet(d / "ecr.parquet")
    frontier = pd.read_parquet(d / "frontier.parquet")
    name = summary["study"].iloc[0]
    return "\n\n".join(
        [
            f"### {name}",
            "(a) float vs retrained 2-bit test error",
            finding_a(summary),
            "(b) effective compression ratio",
            finding_b(ecr),
            "(c) direct quantization vs retraining",
            finding_c(summary),
            "(d) best cell per weight-memory budget",
            finding_d(frontier),
        ]
    )
