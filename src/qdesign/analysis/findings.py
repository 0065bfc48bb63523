"""The paper's four findings, measured on a study's tables (markdown output).

(a) the error gap between float and retrained 2-bit networks, small vs large;
(b) the effective compression ratio of each bits value (ECR > 1: at equal
    accuracy the quantized network needs less weight memory);
(c) how much of the direct-quantization loss retraining recovers;
(d) which bits lie on the memory-vs-error frontier at each budget.

Every finding is per retraining method: cells of different methods are never
averaged as if they were seeds, and counts of widths are per method. A study
with one method prints as before (the method is named in the heading line);
with several, each table is repeated per method and the frontier names the
method of each cell.

Used by ``python -m qdesign findings`` and to write docs/reproduction.md; reads
only the summary, ECR and frontier tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS
from ..core.errors import TableError
from .aggregate import FLOAT_METHOD, with_method

MIN_LOSS = 0.005  # direct-quantization loss (0.5 points) below which "recovered" is not computed
TABLES = ("summary", "ecr", "frontier")


def _pct(x: float) -> str:
    return "n/a" if pd.isna(x) else f"{100 * x:.2f}%"


def _bits_label(b) -> str:
    return "float" if int(b) >= FLOAT_BITS else f"{int(b)}-bit"


def _methods(table: pd.DataFrame) -> list[str]:
    """The retraining methods of a table's quantized rows, sorted."""
    df = with_method(table)
    return sorted(df.loc[df["bits"] < FLOAT_BITS, "method"].unique())


def _per_method(table: pd.DataFrame, render) -> str:
    """``render(rows of one method)`` for each method; with one method just its table."""
    df = with_method(table)
    methods = _methods(df)
    if len(methods) == 1:
        return render(df[df["method"].isin([methods[0], FLOAT_METHOD])])
    return "\n\n".join(f"Method **{m}**:\n\n" + render(df[df["method"].isin([m, FLOAT_METHOD])]) for m in methods)


def gap_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per method, width and bits: mean float, direct and retrained test error
    over seeds, and the share of the direct-quantization loss that retraining
    recovers (all methods share the float networks)."""
    summary = with_method(summary)
    fl = summary[summary.bits >= FLOAT_BITS].groupby("width")["test_error"].mean().rename("float_error")
    q = (
        summary[summary.bits < FLOAT_BITS]
        .groupby(["method", "width", "bits"])
        .agg(
            retrained=("test_error", "mean"),
            direct=("direct_test_error", "mean"),
            n_seeds=("seed", "nunique"),
        )
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
    def render(rows):
        q = gap_table(rows)
        q = q[q.bits == bits].sort_values("width")
        lines = [f"| width | float | {bits}-bit retrained | gap (points) |", "|---:|---:|---:|---:|"]
        for r in q.itertuples():
            lines.append(f"| {r.width} | {_pct(r.float_error)} | {_pct(r.retrained)} | {100 * r.gap:+.2f} |")
        return "\n".join(lines)

    return _per_method(summary, render)


def finding_b(ecr: pd.DataFrame) -> str:
    def render(rows):
        q = rows[rows.bits < FLOAT_BITS]
        lines = [
            "| bits | ECR median over widths | min | max | widths with ECR > 1 | bounds |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for b, g in q.groupby("bits"):
            bounds = g["ecr_bound"].dropna().value_counts().to_dict()
            btxt = ", ".join(f"{v} {k}" for k, v in sorted(bounds.items())) or "none"
            lines.append(
                f"| {int(b)} | {g['ecr'].median():.2f} | {g['ecr'].min():.2f} | {g['ecr'].max():.2f} | "
                f"{int((g['ecr'] > 1).sum())} of {g['width'].nunique()} | {btxt} |"
            )
        return "\n".join(lines)

    return _per_method(ecr, render)


def finding_c(summary: pd.DataFrame) -> str:
    def render(rows):
        q = gap_table(rows)
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

    return _per_method(summary, render)


def _recovered(shares: pd.Series) -> str:
    """The median share of the loss recovered, over how many widths, and what a share above 100% means."""
    n = len(shares)
    if not n:
        return "no loss to recover"
    med = shares.median()
    beyond = "; above 100%: retrained beats float" if med > 1 else ""
    return f"{_pct(med)} ({n} width{'s' if n != 1 else ''}{beyond})"


def finding_d(frontier: pd.DataFrame) -> str:
    """The frontier is over every cell of the study, of any method: with
    several methods each row names the method of its cell."""
    frontier = with_method(frontier)
    several = len(_methods(frontier)) > 1

    def label(r) -> str:
        return _bits_label(r.bits) + (f" ({r.method})" if several and int(r.bits) < FLOAT_BITS else "")

    f = frontier[frontier.kind == "budget"].dropna(subset=["bits"])
    head = "| budget (KiB of weights) | best width | bits | test error |"
    lines = [head.replace("| bits |", "| bits (method) |") if several else head, "|---:|---:|---:|---:|"]
    for r in f.itertuples():
        lines.append(f"| {r.budget_bits / 8192:.3g} | {int(r.width)} | {label(r)} | {_pct(r.error)} |")
    pareto = frontier[frontier.kind == "pareto"]
    counts = pd.Series([label(r) for r in pareto.itertuples()], dtype=object).value_counts()
    lines.append("")
    by = "bits and method" if several else "bits"
    lines.append(f"Pareto-optimal cells by {by}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return "\n".join(lines)


def read_study_tables(study_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """summary, ecr and frontier.parquet of one study folder; a missing or
    unreadable one is one line naming it and what makes it."""
    d = Path(study_dir)
    if not d.is_dir():
        raise TableError(f"{d} is not a folder: give a study's folder (results/<study>, reference/<profile>/<study>)")
    out = []
    for name in TABLES:
        path = d / f"{name}.parquet"
        if not path.is_file():
            raise TableError(
                f"{path} not found: findings reads a study's {', '.join(TABLES)} tables "
                f"(made by the aggregate rule: snakemake --cores all {path})"
            )
        try:
            out.append(pd.read_parquet(path))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
            raise TableError(f"cannot read {path} ({type(exc).__name__}); rerun the aggregate rule") from None
    if out[0].empty:
        raise TableError(f"{d / 'summary.parquet'} holds no cells")
    return out[0], out[1], out[2]


def _heading(summary: pd.DataFrame) -> str:
    """Name, methods and how many widths and seeds each has: what every mean below averages."""
    s = with_method(summary)
    parts = []
    for m in [FLOAT_METHOD, *_methods(s)]:
        rows = s[s["method"] == m]
        parts.append(f"{m}: {rows['width'].nunique()} widths x {rows['seed'].nunique()} seeds")
    return f"### {s['study'].iloc[0]}\n\nCells: {'; '.join(parts)}. Errors are means over seeds, per method."


def report(study_dir: str | Path) -> str:
    """Markdown of the four findings for one study folder (summary/ecr/frontier.parquet)."""
    summary, ecr, frontier = read_study_tables(study_dir)
    return "\n\n".join(
        [
            _heading(summary),
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
