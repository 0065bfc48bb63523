"""The design model on the shipped reference tables: what docs/scaling.md reports.

For each reference study: every form's held-out validation error, the nested
cross-validation (the form chosen inside every fold) by held-out width and by
held-out bits: mean absolute error of the held-out validation means and the
share of held-out *test* means inside their 90% intervals, per held-out value;
the law's ECR against the read-off ECR where the read-off is informative; and,
when the reference has them, the closed loop's recommendations.

    python benchmarks/design_model.py [reference/cpu] [--n-boot 100]

Torch-free, deterministic; about half a minute per study on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from qdesign.analysis import scaling as S  # noqa: E402
from qdesign.analysis.aggregate import ecr_table  # noqa: E402
from qdesign.analysis.tables import primary_method  # noqa: E402


def pct(x) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.3f}"


def study_report(folder: Path, n_boot: int) -> None:
    summary = pd.read_parquet(folder / "summary.parquet")
    t0 = time.perf_counter()
    table = S.scaling_table(summary, n_boot=n_boot)
    print(f"\n## {folder.name} ({time.perf_counter() - t0:.1f} s for the scaling table)\n")
    for method in S.fitted_methods(table):
        t = table[table["method"] == method]
        scores = t[t["kind"] == "form_score"]
        print(f"### method {method}\n")
        print(
            "form scores (mean held-out |error| of validation means, points): "
            + ", ".join(
                f"{r.name} {100 * r.value:.3f}{' (chosen)' if r.note == 'chosen' else ''}" for r in scores.itertuples()
            )
        )
        params = t[t["kind"] == "param"].set_index("name")
        print(
            "parameters (90% seed-bootstrap intervals): "
            + ", ".join(
                f"{n} {params.loc[n, 'value']:.4g} [{params.loc[n, 'lo']:.4g}, {params.loc[n, 'hi']:.4g}]"
                for n in ("E", "a0", "alpha", "beta")
            )
        )
        cv = t[t["kind"] == "cv"].copy()
        if cv.empty:
            print("nested cross-validation: not possible (too few widths or bits)\n")
            continue
        parsed = cv["note"].str.extract(r"val ([-0-9.e]+) se ([-0-9.e]+) test ([-0-9.e]+)").astype(float)
        cv["val"], cv["test"] = parsed[0], parsed[2]
        cv["covered"] = (cv["test"] >= cv["lo"]) & (cv["test"] <= cv["hi"])
        cv["abs"] = (cv["value"] - cv["val"]).abs()
        cv["half"] = (cv["hi"] - cv["lo"]) / 2
        print("\n| held out | value | cells | MAE (points) | coverage | median half-width (points) |")
        print("|---|---:|---:|---:|---:|---:|")
        for (by, held), g in cv.groupby(["by", "held_out"]):
            print(
                f"| {by} | {held:g} | {len(g)} | {pct(g['abs'].mean())} | {g['covered'].mean():.2f} | "
                f"{pct(g['half'].median())} |"
            )
        for by, g in cv.groupby("by"):
            print(
                f"| {by} | all | {len(g)} | {pct(g['abs'].mean())} | **{g['covered'].mean():.2f}** | "
                f"{pct(g['half'].median())} |"
            )
        print()
    method = primary_method(summary)
    ecr = ecr_table(summary)
    ecr = ecr[(ecr["method"] == method) & (ecr["bits"] < 32)]
    model = table[(table["kind"] == "ecr_model") & (table["method"] == method)]
    m = ecr.merge(model[["width", "bits", "value", "lo", "hi"]], on=["width", "bits"])
    inf = m[m["readoff_informative"]]
    overlap = (inf["ecr_lo"] <= inf["hi"]) & (inf["lo"] <= inf["ecr_hi"])
    print(
        f"ECR ({method}): read-off informative in {len(inf)} of {len(m)} cells; the law's and the read-off's 90% "
        f"intervals overlap in {int(overlap.sum())} of {len(inf)} of them"
    )
    rec = folder / "recommendations.parquet"
    if rec.is_file():
        r = pd.read_parquet(rec)
        print(
            "\n| budget (KiB) | design | predicted (val) | 90% interval (test) | measured test ± SE | inside "
            "| new width |"
        )
        print("|---:|---|---:|---|---|---|---|")
        for x in r.itertuples():
            print(
                f"| {x.budget_bits / 8192:g} | w{x.design_width} {x.design_bits} bits ({x.design_method}) | "
                f"{pct(x.predicted)} | {pct(x.predicted_lo)}-{pct(x.predicted_hi)} | "
                f"{pct(x.measured_test_error)} ± {pct(x.measured_test_se)} | {x.inside} | {not x.in_grid} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", nargs="?", default=str(REPO / "reference" / "cpu"))
    ap.add_argument("--n-boot", type=int, default=100)
    args = ap.parse_args()
    for folder in sorted(p for p in Path(args.reference).iterdir() if (p / "summary.parquet").is_file()):
        study_report(folder, args.n_boot)


if __name__ == "__main__":
    main()
