"""A study's answer: the budgets it is given at (one documented rule), the
page that states it, and the summary a finished run prints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qdesign.analysis.aggregate import frontier_table
from qdesign.analysis.answer import MAX_BUDGETS, answer_budgets, closing_summary, study_answer
from qdesign.figures.report import answer_html

from .study_tables import synthetic_summary

KIB = 8192


def _summary(kib_lo: float, kib_hi: float) -> pd.DataFrame:
    return pd.DataFrame({"memory_bits_weights": [kib_lo * KIB, kib_hi * KIB]})


@pytest.mark.parametrize(
    ("lo", "hi", "want"),
    [
        (0.18, 586, [0.5, 2, 8, 32, 128, 512]),  # the digits FCDNN: 12 powers, every second, from the top
        (1.0, 8.0, [1, 2, 4, 8]),  # few powers: all of them, the ends included
        (6.7, 11_370, [8, 32, 128, 512, 2048, 8192]),
        (3.0, 3.5, [3.5]),  # no power of two inside: the largest memory
    ],
)
def test_budgets_are_round_and_spread(lo, hi, want):
    got = answer_budgets(_summary(lo, hi)) / KIB
    np.testing.assert_allclose(got, want)
    assert len(got) <= MAX_BUDGETS and got.max() <= hi and got.min() >= lo


def test_the_answer_page_states_the_answer():
    s = synthetic_summary()
    f = frontier_table(s)
    no_law = pd.DataFrame([{"method": "fixed", "kind": "status", "name": "not fitted", "note": "too few widths"}])
    page = answer_html(s, f, no_law)
    answer = study_answer(s, f, no_law)
    first = answer.iloc[0]
    assert "The best design per memory budget" in page and "Chosen on <b>validation</b> error" in page
    # every budget's named cell with its test error ± SE over seeds, in percent
    for r in answer.itertuples():
        assert f"width {r.trained_width}, " in page
        assert f"{100 * r.trained_test_error:.2f} ± {100 * r.trained_test_se:.2f} (2 seeds)" in page
    assert "no law" in page and "too few widths" in page
    assert first.budget_bits == answer_budgets(s).min()
    assert "<a href" not in page  # a link would be dead inside the Snakemake report


def test_closing_summary(tmp_path, monkeypatch):
    s = synthetic_summary(study="demo")
    (tmp_path / "results" / "demo").mkdir(parents=True)
    s.to_parquet(tmp_path / "results" / "demo" / "summary.parquet")
    frontier_table(s).to_parquet(tmp_path / "results" / "demo" / "frontier.parquet")
    monkeypatch.chdir(tmp_path)
    text = closing_summary(["demo", "not-run"])  # a study without tables is left out
    lines = text.splitlines()
    assert lines[0].startswith("qdesign: demo: 60 trained networks (FCDNN on mnist, widths 8-256)")
    assert "chosen on validation" in lines[0] and "not-run" not in text
    assert "results/demo/report/answer.html" in text and lines[-1].endswith("snakemake --report report.html")
    assert max(map(len, lines)) < 200
