"""Choose on validation data, report on test data: no choice of the project
reads test error. Permuting the test_error column of a study changes no
choice (the frontier's cells, the best design per budget, the mixed-precision
winner's design, the law's form and parameters, its intervals, recommend's
named designs); it only changes the test numbers reported beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qdesign.analysis import scaling as S
from qdesign.analysis.aggregate import frontier_table
from qdesign.analysis.mixed import comparison_table
from qdesign.analysis.recommend import advise

from .scaling_data import synthetic


def _permuted(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = df.copy()
    for col in ("test_error", "direct_test_error"):
        if col in out.columns:
            out[col] = rng.permutation(out[col].to_numpy())
    return out


@pytest.fixture(scope="module")
def study():
    a = synthetic("penalty", seed_sd=0.002, rng=np.random.default_rng(21), method="fixed")
    b = synthetic("additive", seed_sd=0.002, rng=np.random.default_rng(22), method="learned")
    return pd.concat([a, b[b.bits < 32]], ignore_index=True)


def test_the_permutation_changes_test_errors(study):
    assert not np.array_equal(_permuted(study)["test_error"], study["test_error"])


def test_frontier_choices(study):
    keys = ["kind", "budget_bits", "width", "bits", "method"]
    a, b = frontier_table(study), frontier_table(_permuted(study))
    pd.testing.assert_frame_equal(a[keys], b[keys])
    assert not np.allclose(a["error"], b["error"])  # what is reported did change


def test_law_and_intervals(study):
    a, b = S.scaling_table(study, n_boot=8, nested=False), S.scaling_table(_permuted(study), n_boot=8, nested=False)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("budget", [30_000, 120_000, 2_000_000])
def test_recommend_choices(study, budget):
    table = S.scaling_table(study, n_boot=8, nested=False)
    a, b = advise(study, table, budget), advise(_permuted(study), table, budget)
    cols = ["method", "width", "bits", "tied", "named"]
    pd.testing.assert_frame_equal(a.trained[cols].reset_index(drop=True), b.trained[cols].reset_index(drop=True))
    pd.testing.assert_frame_equal(a.designs.reset_index(drop=True), b.designs.reset_index(drop=True))


def test_mixed_comparison_choices(study):
    fixed = study[study.method.isin(["fixed"]) | study.method.isna()]
    mixed = fixed[fixed.bits == 3].copy()
    mixed["bits"] = 0
    mixed["precision"] = "m2.5"
    mixed["pattern"] = "2-3"
    mixed["budget_mean_bits"] = 2.5
    mixed["allocation"] = "knapsack"
    mixed["memory_bits_weights"] = (mixed["n_weights"] * 2.5).astype(int)
    mixed["memory_bits_total"] = mixed["memory_bits_weights"] + 100
    mixed["val_error"] = mixed["val_error"] + np.linspace(-0.003, 0.003, len(mixed))
    cols = ["method", "budget_bits", "uniform_width", "uniform_bits", "mixed_width", "mixed_precision"]
    a = comparison_table(fixed, mixed)
    b = comparison_table(_permuted(fixed), _permuted(mixed, 1))
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_answer_page_choices(study):
    """The report's answer per budget (and the end-of-run summary's) chooses on validation."""
    from qdesign.analysis.answer import study_answer  # noqa: PLC0415

    table = S.scaling_table(study, n_boot=8, nested=False)
    a = study_answer(study, frontier_table(study), table)
    b = study_answer(_permuted(study), frontier_table(_permuted(study)), table)
    cols = [c for c in a.columns if c.startswith(("trained_", "design_", "predicted")) and "test" not in c]
    cols.append("budget_bits")
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert not np.allclose(a["trained_test_error"], b["trained_test_error"])
