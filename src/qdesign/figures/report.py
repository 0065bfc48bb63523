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

from .. import __version__
from ..core.provenance import git_commit

_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:1em auto;color:#222}"
    "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f0f0f0}"
    "caption{text-align:left;font-weight:bold;padding:4px 0}pre{background:#f6f6f6;padding:8px}"
)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _table(df, caption: str) -> str:
    return f"<h3>{html.escape(caption)}</h3>" + df.to_html(
        index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0
    )


def tables_html(summary, ecr, frontier, study: str) -> str:
    """The ECR and frontier tables of a study, and its seed-mean errors, as one page."""
    keys = [c for c in ("method", "width", "bits") if c in summary.columns]
    means = (
        summary.groupby(keys, dropna=False)
        .agg(
            n_weights=("n_weights", "first"),
            test_error=("test_error", "mean"),
            test_error_std=("test_error", "std"),
            direct_test_error=("direct_test_error", "mean"),
            seeds=("seed", "count"),
            memory_kib=("memory_bits_weights", lambda m: m.mean() / 8192),
        )
        .reset_index()
    )
    pct = ["test_error", "test_error_std", "direct_test_error"]
    means[pct] = 100 * means[pct]
    ecr_cols = [
        c
        for c in (
            "method",
            "width",
            "bits",
            "error",
            "error_std",
            "n_seeds",
            "float_equivalent_weights",
            "ecr",
            "ecr_lo",
            "ecr_hi",
            "ecr_bound",
        )
        if c in ecr.columns
    ]
    fr = frontier.copy()
    if "budget_bits" in fr.columns:
        fr.insert(1, "budget_kib", fr["budget_bits"] / 8192)
    from ..analysis.tables import flagged_note  # noqa: PLC0415

    note = flagged_note(summary)
    body = [
        f"<p>Study <b>{html.escape(study)}</b>: {len(summary)} trained networks. Errors in percent "
        "(test set), means over seeds. Memory: weights only, KiB.</p>",
        f"<p style='color:#b00'><b>Warning:</b> {html.escape(note)}.</p>" if note else "",
        _table(means, "Cells: seed-mean test error, before (direct) and after retraining"),
        _table(ecr[ecr_cols], "Effective compression ratio per width and bits (see docs/method.md §3)"),
        _table(fr, "Frontier: Pareto cells, and the best cell per memory budget"),
    ]
    return _page(f"{study}: tables", "".join(body))


def mixed_html(comparison, mixed, study: str) -> str:
    """The mixed-precision tables of a study: best uniform vs best mixed per
    budget, and every mixed design's seed-mean error and patterns."""
    import pandas as pd  # noqa: PLC0415

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
        _table(cmp, "Best uniform vs best mixed design per memory budget"),
        _table(
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
    return _page(f"{study}: mixed precision", "".join(body))


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
        f"<tr><th>{html.escape(name)}</th><td>{len(s)} cells; config hashes in the tables: "
        f"{s['config_hash'].nunique()}; devices {', '.join(sorted(map(str, s['device'].unique())))}; "
        f"{s['job_seconds'].sum():.0f} job-seconds</td></tr>"
        for name, s in summaries.items()
    )
    body = (
        f"<p>git commit <code>{html.escape(str(git_commit(repo)))}</code>; config SHA-256 "
        f"(canonical JSON) <code>{digest}</code></p>"
        f"<table><caption>Software</caption>{rows}</table>"
        f"<table><caption>Studies</caption>{studies}</table>"
        f"<h2>Config (validated, defaults filled)</h2><pre>{html.escape(text)}</pre>"
    )
    return _page("Provenance", body)
