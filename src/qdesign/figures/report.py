"""HTML pages for the Snakemake report: a study's tables, and the run's
provenance (config, its hash, versions, commit). The figures go into the
report as they are; these pages hold what a reader needs beside them.

Torch-free: built from the tables and the config only.
"""

from __future__ import annotations

import hashlib
import html
import json
import platform
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..analysis.aggregate import readoff_informative
from ..analysis.tables import with_method
from ..core.precision import is_float_bits
from ..core.provenance import git_commit

_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:1em auto;color:#222}"
    "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:top}th{background:#f0f0f0}"
    ".text{text-align:left}"
    "caption{text-align:left;font-weight:bold;padding:4px 0}pre{background:#f6f6f6;padding:8px}"
    "p.note{font-size:0.85em;color:#555;max-width:60em}p.lead{font-size:1.05em}"
)


def html_page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def html_table(df, caption: str, note: str = "") -> str:
    """A captioned table; every number already in the unit its column header
    names. Numbers right-aligned (4 significant digits), text left-aligned."""
    text = f"<p class='note'>{html.escape(note)}</p>" if note else ""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]

    def cell(v, num: bool) -> str:
        if num:
            shown = "" if pd.isna(v) else _number(v)
            return f"<td>{html.escape(shown)}</td>"
        return f"<td class='text'>{html.escape('' if pd.isna(v) else str(v))}</td>"

    head = "".join(
        f"<th{'' if num else chr(32) + 'class=text'}>{html.escape(str(c))}</th>" for c, num in zip(df.columns, numeric)
    )
    rows = "".join(
        "<tr>" + "".join(cell(v, num) for v, num in zip(r, numeric)) + "</tr>" for r in df.itertuples(index=False)
    )
    return f"<h3>{html.escape(caption)}</h3>{text}<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _number(v) -> str:
    """4 significant digits; large numbers in full with thousands separators (27,456, not 2.746e+04)."""
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return str(v) if isinstance(v, (int, np.integer)) else f"{v:.4g}"


def _few(names: str, n: int = 3) -> str:
    """At most ``n`` of a "; "-separated list, and how many more."""
    items = [x for x in str(names or "").split("; ") if x]
    if not items:
        return "none"
    more = f"; and {len(items) - n} more" if len(items) > n else ""
    return "; ".join(items[:n]) + more


KIB = 8192  # bits per KiB


def _pct(x, digits: int = 2) -> str:
    return "" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def _ecr_interval(row) -> str:
    """The read-off's bootstrap interval, or what a bound has instead of one."""
    bound = row.get("ecr_bound")
    if isinstance(bound, str) and bound in ("upper", "lower"):
        return "none: a bound"
    lo, hi = row.get("ecr_lo", np.nan), row.get("ecr_hi", np.nan)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f"[{lo:.3g}, {hi:.3g}]"


def _ecr_value(row) -> str:
    bound = row.get("ecr_bound")
    sign = {"upper": "≤ ", "lower": "≥ "}.get(bound if isinstance(bound, str) else "", "")
    return f"{sign}{row['ecr']:.3g}"


def tables_html(summary, ecr, frontier, study: str) -> str:
    """The ECR and frontier tables of a study, and its seed-mean errors, as one
    page: errors in percent, standard deviations in percentage points, memory
    in KiB, every column labelled with its unit."""
    summary = with_method(summary)
    keys = ["method", "width", "bits"]
    means = (
        summary.groupby(keys, dropna=False)
        .agg(
            n_weights=("n_weights", "first"),
            memory_kib=("memory_bits_weights", lambda m: m.mean() / KIB),
            val_error=("val_error", "mean"),
            test_error=("test_error", "mean"),
            test_error_std=("test_error", "std"),
            direct_test_error=("direct_test_error", "mean"),
            seeds=("seed", "count"),
        )
        .reset_index()
    )
    pct = ["val_error", "test_error", "test_error_std", "direct_test_error"]
    means[pct] = 100 * means[pct]
    means = means.rename(
        columns={
            "n_weights": "weights",
            "memory_kib": "weight memory (KiB)",
            "val_error": "validation error (%)",
            "test_error": "test error (%)",
            "test_error_std": "test error std over seeds (points)",
            "direct_test_error": "direct test error, before retraining (%)",
        }
    )

    e = with_method(ecr)
    e = e[~is_float_bits(e["bits"])].reset_index(drop=True)
    ecr_rows = pd.DataFrame(
        {
            "method": e["method"],
            "width": e["width"],
            "bits": e["bits"],
            "test error (%)": 100 * e["error"],
            "std over seeds (points)": 100 * e["error_std"] if "error_std" in e.columns else np.nan,
            "seeds": e["n_seeds"] if "n_seeds" in e.columns else np.nan,
            "float-equivalent weights": e["float_equivalent_weights"].round(0),
            "ECR (x)": [_ecr_value(r) for _, r in e.iterrows()],
            "90% interval over seeds (x)": [_ecr_interval(r) for _, r in e.iterrows()],
            "read-off informative": ["yes" if ok else "no" for ok in readoff_informative(e).to_numpy(bool)],
        }
    )

    fr = with_method(frontier) if "bits" in frontier.columns else frontier.copy()
    memory = str(fr["memory"].dropna().iloc[0]) if "memory" in fr.columns and fr["memory"].notna().any() else "weights"
    front = pd.DataFrame(
        {
            "row": fr["kind"].map({"pareto": "Pareto cell", "budget": "best within budget"}).fillna(fr["kind"]),
            "budget (KiB)": fr["budget_bits"] / KIB,
            "method": fr["method"],
            "width": fr["width"],
            "bits": fr["bits"],
            "memory (KiB)": fr["memory_bits"] / KIB,
            "validation error (%)": 100 * fr["val_error"] if "val_error" in fr.columns else np.nan,
            "test error (%)": 100 * fr["error"],
            "test error std over seeds (points)": 100 * fr["error_std"] if "error_std" in fr.columns else np.nan,
        }
    )
    from ..analysis.tables import flagged_note  # noqa: PLC0415

    note = flagged_note(summary)
    chosen = "validation" if "val_error" in fr.columns else "test"
    n_test = int(summary["n_test"].median()) if "n_test" in summary.columns and summary["n_test"].notna().any() else 0
    test = f" The test set has {n_test:,} images: one image is {100 / n_test:.2g} points." if n_test else ""
    body = [
        f"<p>Study <b>{html.escape(study)}</b>: {len(summary)} trained networks. Errors in percent and "
        "standard deviations in percentage points (points), means over seeds; memory in KiB (1 KiB = 8,192 "
        f"bits), weights only.{test} The answer per budget: the study's answer page.</p>",
        f"<p style='color:#b00'><b>Warning:</b> {html.escape(note)}.</p>" if note else "",
        html_table(means, "Cells: seed-mean errors, before (direct) and after retraining"),
        html_table(
            ecr_rows,
            "Effective compression ratio per width and bits (docs/method.md §5)",
            "ECR = float-equivalent weights x 32 / (weights x bits), read off the float curve at the test error. "
            "≥ / ≤: only a bound (the quantized error lies outside the float curve), which has no interval. "
            "Informative: no bound, and the 90% interval spans at most a factor of 2.",
        ),
        html_table(
            front,
            "Frontier: the Pareto cells, and the best cell within each memory budget",
            f"Chosen on {chosen} error, reported with test error; memory counts {memory}"
            + (" only." if memory == "weights" else " (weights, biases and steps)."),
        ),
    ]
    return html_page(f"{study}: tables", "".join(body))


_FORMS = {
    "effsize": "err = E + a0 · exp(−α (x + θ_b)): a b-bit network of N weights acts like a float one of N·e^θ_b "
    "weights (e^θ_b: its effective-size factor)",
    "penalty": "err = E + a0 · exp(−α x) + θ_b · exp(−β x): quantization adds its own power of N, θ_b "
    "the extra error at N = n0",
    "additive": "err = E + a0 · exp(−α x) + θ_b: a constant extra error θ_b per word length",
}
_PARAMS = {
    "E": ("floor E (%)", 100, "the error no size reaches"),
    "a0": ("a0 (%)", 100, "a float network's error above the floor at n0 weights"),
    "alpha": ("α", 1, "how fast error falls with size"),
    "beta": ("β", 1, "how fast quantization's cost falls with size (penalty form)"),
    "n0": ("n0 (weights)", 1, "reference size: geometric mean of the trained sizes"),
    "n_min": ("smallest trained size (weights)", 1, ""),
    "n_max": ("largest trained size (weights)", 1, ""),
}


def _design(method, width, bits) -> str:
    if not np.isfinite(width):
        return ""
    kind = "float" if is_float_bits(bits) else f"{int(bits)} bits ({method})"
    return f"width {int(width)}, {kind}"


def _answer_rows(answer: pd.DataFrame, level: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the best trained design, the law's design) per budget, as display tables."""
    a = answer.reindex(columns=[*answer.columns, *(c for c in _ANSWER_COLUMNS if c not in answer.columns)])
    pm = [
        "" if not np.isfinite(m) else f"{100 * m:.2f} ± {100 * e:.2f} ({int(n)} seed{'s' if n != 1 else ''})"
        for m, e, n in zip(a["trained_test_error"], a["trained_test_se"], a["trained_n_seeds"].fillna(0))
    ]
    trained = pd.DataFrame(
        {
            "budget (KiB)": a["budget_bits"] / KIB,
            "best trained design": [
                _design(m, w, b) or "none fits"
                for m, w, b in zip(a["trained_method"], a["trained_width"], a["trained_bits"])
            ],
            "its memory (KiB)": a["trained_memory_bits"] / KIB,
            "validation error (%)": 100 * a["trained_val_error"].astype(float),
            "test error (%, mean ± SE)": pm,
            "also within 2 SE on validation": a["trained_tied"].map(_few),
        }
    )
    pct = f"{round(100 * level)}%"
    law = pd.DataFrame(
        {
            "budget (KiB)": a["budget_bits"] / KIB,
            "law's design (largest width that fits)": [
                _design(m, w, b) or "no law" for m, w, b in zip(a["design_method"], a["design_width"], a["design_bits"])
            ],
            "its memory (KiB)": a["design_memory_bits"] / KIB,
            "predicted test error (%)": 100 * a["predicted"].astype(float),
            f"{pct} interval for a new run's mean (%)": [
                "" if not np.isfinite(lo) else f"[{_pct(lo)}, {_pct(hi)}]"
                for lo, hi in zip(a["predicted_lo"], a["predicted_hi"])
            ],
            "tied (the law cannot tell them apart)": a["design_tied"].map(_few),
        }
    )
    return trained, law


_ANSWER_COLUMNS = (
    "trained_method",
    "trained_width",
    "trained_bits",
    "trained_memory_bits",
    "trained_val_error",
    "trained_test_error",
    "trained_test_se",
    "trained_n_seeds",
    "trained_tied",
    "design_method",
    "design_width",
    "design_bits",
    "design_memory_bits",
    "predicted",
    "predicted_lo",
    "predicted_hi",
    "design_tied",
)


def _law_html(scaling: pd.DataFrame) -> str:
    """Per fitted method: the form, its parameters with intervals, the per-bits
    parameters, the form scores and the nested cross-validation."""
    if "kind" not in scaling.columns or "method" not in scaling.columns:
        return "<p>The scaling table is in an older format: rerun the scaling rule to see the law here.</p>"
    out = []
    for method in sorted(scaling["method"].dropna().unique()):
        t = scaling[scaling["method"] == method]
        status = t[t["kind"] == "status"]
        if len(status):
            out.append(
                f"<h3>Method {html.escape(method)}: no law</h3><p>{html.escape(str(status['note'].iloc[0]))}</p>"
            )
            continue
        params = t[t["kind"] == "param"]
        if params.empty:
            continue
        form = str(params["form"].iloc[0])
        level = float(params["level"].dropna().iloc[0]) if params["level"].notna().any() else 0.9
        pct = f"{round(100 * level)}%"
        rows = []
        for r in params.itertuples():
            label, scale, meaning = _PARAMS.get(r.name, (r.name, 1, ""))
            if not np.isfinite(r.value):
                continue
            fixed = r.name in ("n0", "n_min", "n_max")
            rows.append(
                {
                    "parameter": label,
                    "value": f"{scale * r.value:,.0f}" if fixed else f"{scale * r.value:.4g}",
                    f"{pct} bootstrap interval": ""
                    if fixed or not np.isfinite(r.lo)
                    else f"[{scale * r.lo:.4g}, {scale * r.hi:.4g}]",  # fmt: skip
                    "meaning": meaning,
                }
            )
        per_bits = t[t["kind"] == "per_bits"].sort_values("bits")
        # effsize's θ_b is a log size factor; the other forms' θ_b is an error (shown in points)
        scale, name = (1, "θ_b") if form == "effsize" else (100, "θ_b (points)")
        pb = pd.DataFrame(
            {
                "bits": per_bits["bits"].astype(int),
                name: scale * per_bits["value"].to_numpy(float),
                f"{pct} bootstrap interval": [
                    f"[{scale * lo:.4g}, {scale * hi:.4g}]" for lo, hi in zip(per_bits["lo"], per_bits["hi"])
                ],
            }
        )
        if form == "effsize":
            pb["effective-size factor e^θ_b"] = np.exp(per_bits["value"].to_numpy(float))
        scores = t[t["kind"] == "form_score"]
        sc = pd.DataFrame(
            {
                "form": scores["name"],
                "held-out validation error (mean absolute, points)": 100 * scores["value"],
                "chosen": scores["note"].fillna("").map(lambda n: "yes" if n == "chosen" else ""),
            }
        )
        cov = t[t["kind"] == "coverage"]
        cv = pd.DataFrame(
            {
                "held out": cov["name"].map({"width": "one width at a time", "bits": "one word length at a time"}),
                "held-out cells": cov["n"].astype("Int64"),
                "mean absolute error on held-out validation means (points)": [
                    100 * _note_number(n) for n in cov["note"]
                ],
                f"share of held-out test means inside the {pct} interval": [f"{100 * v:.0f}%" for v in cov["value"]],
            }
        )
        out.append(
            f"<h3>Method {html.escape(method)}: the {html.escape(form)} form</h3>"
            f"<p><code>{html.escape(_FORMS.get(form, form))}</code>, with x = log(N / n0), N the number of weights; "
            "fitted on seed-mean validation errors (never on test errors); θ_b is fitted per trained word length, "
            "0 for float, interpolated between trained word lengths.</p>"
        )
        out.append(html_table(pd.DataFrame(rows), "Parameters"))
        out.append(html_table(pb, "Per word length"))
        out.append(html_table(sc, "Forms tried, scored by held-out validation error (the lowest is chosen)"))
        if len(cv):
            out.append(
                html_table(
                    cv,
                    "Nested cross-validation: how well the law predicts what it did not see",
                    "The form is chosen again inside every fold, so these numbers are not the ones it was chosen "
                    f"on. Coverage: the share of held-out cells whose mean test error falls inside the {pct} "
                    "prediction interval (nominal: " + pct + ").",
                )
            )
    return "".join(out)


def _note_number(text) -> float:
    """The number at the end of a coverage row's note ("mean abs held-out validation error 0.0083")."""
    try:
        return float(str(text).split()[-1])
    except (ValueError, IndexError):
        return float("nan")


def _headline(answer: pd.DataFrame) -> str:
    """One factual sentence: which word lengths the best trained designs use at these budgets."""
    t = answer.dropna(subset=["trained_bits"]) if "trained_bits" in answer.columns else answer.iloc[:0]
    if t.empty:
        return ""
    quant = sorted({int(b) for b in t["trained_bits"] if not is_float_bits(b)})
    floats = [f"{b / KIB:g} KiB" for b, bits in zip(t["budget_bits"], t["trained_bits"]) if is_float_bits(bits)]
    where = f"{len(t)} budget{'s' if len(t) != 1 else ''}"
    if not quant:
        return f"At all {where}, the best trained design is a float network."
    used = " or ".join(", ".join(map(str, quant)).rsplit(", ", 1))
    tail = f"; a float network at {', '.join(floats)}" if floats else "; a float network at none of them"
    return f"At these {where}, the best trained design is quantized to {used} bits{tail}."


def answer_html(summary, frontier, scaling) -> str:
    """A study's first page: the best design per budget (trained, and the law's),
    chosen on validation data and reported on test data, and the law behind
    it; links to the pages and figures behind both."""
    from ..analysis.answer import frontier_memory, study_answer  # noqa: PLC0415

    study = str(summary["study"].iloc[0]) if "study" in summary.columns and len(summary) else "study"
    s = with_method(summary)
    answer = study_answer(summary, frontier, scaling)
    level = 0.9
    if "level" in scaling.columns and scaling["level"].notna().any():
        level = float(scaling["level"].dropna().iloc[0])
    trained, law = _answer_rows(answer, level)
    memory = frontier_memory(frontier)
    widths = ", ".join(str(int(w)) for w in sorted(s["width"].unique()))
    bits = ", ".join(str(int(b)) for b in sorted(s["bits"].unique()) if not is_float_bits(b))
    methods = ", ".join(m for m in sorted(s["method"].unique()) if m != "float")
    seeds = s.groupby(["method", "width", "bits"])["seed"].count()
    seeds_text = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    first = s.iloc[0]
    what = f"{html.escape(str(first.get('model', '')).upper())} on {html.escape(str(first.get('dataset', '')))}"
    n_test = int(s["n_test"].median()) if "n_test" in s.columns else 0
    notes = sorted({n for ns in answer["notes"].fillna("") for n in ns.split("; ") if n})
    headline = _headline(answer)
    budgets = ", ".join(f"{b / KIB:g}" for b in answer["budget_bits"])
    body = [
        f"<p class='lead'>{what}: widths {widths}; {bits} bits and float; retraining {html.escape(methods)}; "
        f"{seeds_text} seeds per cell; {len(s)} trained networks. Memory counts {memory}"
        + (" (n_weights x bits)" if memory == "weights" else " (weights, float biases and steps)")
        + ", in KiB (8,192 bits); errors in percent, uncertainties in percentage points (points).</p>",
        "<h2>The best design per memory budget</h2>",
        f"<p class='lead'><b>{html.escape(headline)}</b></p>" if headline else "",
        "<p>Chosen on <b>validation</b> error, reported with <b>test</b> error (mean ± one standard error over "
        f"seeds; the test set has {n_test:,} images, one image = {100 / max(n_test, 1):.2g} points). Designs whose "
        "validation error is within two standard errors of the best are tied with it; the one named is the "
        "smallest of them (least memory, then fewest bits), since nothing measured prefers the others. "
        f"Budgets: {budgets} KiB: powers of two from the smallest trained design's memory to the largest, "
        "at most six, evenly spaced (qdesign.analysis.answer).</p>",
        html_table(trained, "Trained: the best measured design within each budget"),
        html_table(
            law,
            "The law: the best design it predicts within each budget (trained widths and word lengths only)",
            "Predicted from the scaling law below; the interval is for the mean test error of a new training run "
            "of that design and carries the law's cross-validation misfit and the sampling noise of the "
            "validation and test sets (docs/scaling.md). python -m qdesign recommend gives the same for any budget.",
        ),
    ]
    if notes:
        body.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    body += ["<h2>The scaling law err(N, b)</h2>", _law_html(scaling)]
    where = html.escape(study)
    body.append(
        "<h2>The pages behind</h2><p class='note'>In the Snakemake report: the menu on the left; "
        "in the results folder: the paths given.</p><ul>"
        f"<li>Tables: every cell, the ECR per width and bits, the frontier ({where} → tables; "
        f"results/{where}/report/tables.html).</li>"
        f"<li>Figures ({where} → figures; results/{where}/figures/): error vs weight memory with the frontier, "
        "the scaling fit, the ECR, the training curves.</li>"
        "<li>Provenance: the config, its hash, the versions and the commit (provenance; "
        "results/report/provenance.html).</li>"
        f"<li>The same data as Parquet: results/{where}/summary.parquet, frontier.parquet, scaling.parquet.</li></ul>"
    )
    return html_page(f"{study}: the answer", "".join(body))


def mixed_html(comparison, mixed, study: str) -> str:
    """The mixed-precision tables of a study: best uniform vs best mixed per
    budget, and every mixed design's seed-mean error and patterns."""
    from ..analysis.mixed import mixed_means  # noqa: PLC0415

    def pm(mean, std):
        return "" if pd.isna(mean) else f"{100 * mean:.2f} ± {100 * std:.2f}"

    c = comparison
    cmp = pd.DataFrame(
        {
            "method": c["method"],
            "budget (KiB)": c["budget_bits"] / 8192,
            "best uniform": [f"w{w} {b} bits" for w, b in zip(c["uniform_width"], c["uniform_bits"])],
            "error (%)": [pm(m, s) for m, s in zip(c["uniform_error"], c["uniform_std"])],
            "best mixed": [
                "" if pd.isna(w) else f"w{int(w)} {p} ({str(pats).replace(',', ', ')})"
                for w, p, pats in zip(c["mixed_width"], c["mixed_precision"], c["mixed_patterns"])
            ],
            "error (%) ": [pm(m, s) for m, s in zip(c["mixed_error"], c["mixed_std"])],
            "mixed - uniform (points)": 100 * c["difference"],
            "spread (points)": 100 * c["spread"],
            "winner": c["winner"],
        }
    )
    means = mixed_means(mixed)
    means["memory_kib"] = means["memory_bits"] / 8192
    means[["error", "error_std", "direct_error", "val_error"]] *= 100
    means["patterns"] = means["patterns"].str.replace(",", ", ")
    cols = ["method", "width", "precision", "patterns", "memory_kib", "error", "error_std", "n_seeds", "direct_error"]
    wins = cmp["winner"].value_counts().to_dict()
    body = [
        f"<p>Study <b>{html.escape(study)}</b>: {len(mixed)} mixed-precision networks. Errors in percent "
        "(test set), means over seeds; a winner needs a difference beyond the larger seed std. "
        f"Winners: {html.escape(', '.join(f'{k} {v}' for k, v in sorted(wins.items())))}. See docs/mixed.md.</p>",
        html_table(cmp, "Best uniform vs best mixed design per memory budget"),
        html_table(
            means[cols].rename(
                columns={
                    "memory_kib": "memory (KiB)",
                    "error": "error (%)",
                    "error_std": "std (points)",
                    "direct_error": "direct error (%)",
                }
            ),
            "Mixed designs: seed-mean test error (precision m3: a budget of 3 bits per weight)",
        ),
    ]
    return html_page(f"{study}: mixed precision", "".join(body))


def _study_line(summary) -> str:
    """What a study's summary says about how it was made: networks, their cell
    specs (config_hash: one per cell, or not), devices, job-seconds; only the
    columns the table has."""
    parts = [f"{len(summary)} trained networks"]
    if "config_hash" in summary.columns:
        n = summary["config_hash"].nunique()
        parts[0] += (
            " (each from its own cell spec, config_hash)"
            if n == len(summary)
            else f" ({n} distinct cell specs, config_hash)"
        )
    if "device" in summary.columns:
        parts.append(f"devices {', '.join(sorted(map(str, summary['device'].unique())))}")
    if "job_seconds" in summary.columns:
        parts.append(f"{summary['job_seconds'].sum():.0f} job-seconds in all")
    return "; ".join(parts)


def provenance_html(config: Mapping, repo: Path, summaries: Mapping[str, object]) -> str:
    """The config the run used, its hash, the software versions and the commit."""
    import yaml  # noqa: PLC0415

    text = yaml.safe_dump(dict(config), sort_keys=False)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    versions = {"qdesign": __version__, "python": platform.python_version(), "machine": platform.machine()}
    for mod in ("torch", "numpy", "pandas", "snakemake", "matplotlib", "sklearn"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - report what is importable
            versions[mod] = "not importable"
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in versions.items())
    studies = "".join(
        f"<tr><th>{html.escape(name)}</th><td class='text'>{html.escape(_study_line(s))}</td></tr>"
        for name, s in summaries.items()
    )
    body = (
        f"<p>git commit <code>{html.escape(str(git_commit(repo)))}</code>; config SHA-256 "
        f"(canonical JSON) <code>{digest}</code></p>"
        f"<table><caption>Software</caption>{rows}</table>"
        f"<table><caption>Studies</caption>{studies}</table>"
        f"<h2>Config (validated, defaults filled)</h2><pre>{html.escape(text)}</pre>"
    )
    return html_page("Provenance", body)


def recorded_provenance_html(config_bytes: bytes, record: Mapping, summaries: Mapping[str, object]) -> str:
    """Provenance of shipped results, as recorded when they were exported (not
    this checkout's): the config as shipped, its hash (checked against the
    record's), the record's versions, machine, commit and wall time."""
    digest = hashlib.sha256(config_bytes).hexdigest()
    recorded = str(record.get("config_sha256", ""))
    check = "matches the record" if digest == recorded else f"DOES NOT match the record's {recorded}"
    keys = ("config", "git_commit", "qdesign_version", "python", "machine", "processor", "wall_seconds", "note")
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td class='text'>{html.escape(str(record[k]))}</td></tr>"
        for k in keys
        if k in record and record[k] not in ("", None)
    )
    derived = record.get("derived_tables")
    if isinstance(derived, Mapping):
        text = (
            f"{', '.join(map(str, derived.get('tables', [])))} recomputed {derived.get('recomputed', '')} from "
            f"{derived.get('from', '')}: {derived.get('why', '')}"
        )
        rows += f"<tr><th>derived tables</th><td class='text'>{html.escape(text)}</td></tr>"
    loop = record.get("closed_loop")
    if isinstance(loop, Mapping):
        text = (
            f"{', '.join(map(str, loop.get('tables', [])))} of {', '.join(map(str, loop.get('studies', [])))} "
            f"from {loop.get('config', '')} (commit {loop.get('git_commit', '')}, {loop.get('made', '')}, "
            f"{loop.get('wall_seconds', '')} s): {loop.get('note', '')}"
        )
        rows += f"<tr><th>closed loop</th><td class='text'>{html.escape(text)}</td></tr>"
    studies = "".join(
        f"<tr><th>{html.escape(name)}</th><td class='text'>{html.escape(_study_line(s))}</td></tr>"
        for name, s in summaries.items()
    )
    body = (
        f"<p>Shipped results, drawn here from their tables alone (no training ran). Config SHA-256 "
        f"<code>{digest}</code> ({check}).</p>"
        f"<table><caption>Recorded when exported</caption>{rows}</table>"
        f"<table><caption>Studies</caption>{studies}</table>"
        f"<h2>Config (as shipped)</h2><pre>{html.escape(config_bytes.decode('utf-8', 'replace'))}</pre>"
    )
    return html_page("Provenance of the reference results", body)
