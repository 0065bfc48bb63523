"""Tests for the design model: qdesign.analysis.scaling (the law, chosen on
validation error), qdesign.analysis.intervals (prediction intervals, whose
coverage is measured here on studies drawn from a known law),
qdesign.analysis.recommend and qdesign.figures.scaling."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from qdesign.analysis import scaling as S
from qdesign.analysis.aggregate import ecr_table
from qdesign.analysis.bootstrap import readoff_ecr_intervals
from qdesign.analysis.intervals import IntervalModel, mixture_quantiles, shift_sd
from qdesign.analysis.recommend import advise, format_bits, parse_budget, recommend, recommendation_table, size_model
from qdesign.core.errors import TableError, UserError
from qdesign.figures.scaling import plot_ecr_bands, plot_scaling_fit

from .scaling_data import BITS, LAWS, N_TEST, N_VAL, WIDTHS, n_weights_of, synthetic, true_law

# --------------------------------------------------------------------------
# The law
# --------------------------------------------------------------------------


@pytest.mark.parametrize("form", S.FORMS)
def test_exact_recovery_without_noise(form):
    df = synthetic(form, n_seeds=1)
    law = S.fit(S.cell_stats(df), form)
    truth = true_law(form)
    n = n_weights_of(np.array(WIDTHS))
    for b in BITS:
        np.testing.assert_allclose(law.predict(n, b), truth.predict(n, b), rtol=1e-6, atol=1e-9)
    assert pytest.approx(truth.E, abs=1e-6) == law.E and law.alpha == pytest.approx(truth.alpha, rel=1e-4)


def test_the_generating_form_is_chosen_on_clean_data():
    for form in ("penalty", "additive"):
        stats = S.cell_stats(synthetic(form, n_seeds=1))
        chosen, scores = S.select_form(stats)
        assert chosen == form, scores
        # widths the law did not see are predicted exactly by the generating form
        assert S.cv_residuals(stats, form, "width")["residual"].abs().max() < 1e-6


def test_fits_are_deterministic():
    df = synthetic(seed_sd=0.002, rng=np.random.default_rng(3))
    a = S.scaling_table(df, n_boot=10, nested=False)
    b = S.scaling_table(df, n_boot=10, nested=False)
    pd.testing.assert_frame_equal(a, b)


def test_theta_interpolates_extrapolates_and_names_the_kind():
    law = true_law("additive")
    assert law.bits_kind(32) == "float" and law.bits_kind(3) == "trained"
    assert (
        law.bits_kind(5) == "interpolated" and law.bits_kind(1) == "extrapolated" and law.bits_kind(8) == "extrapolated"
    )
    d = LAWS["additive"]["per_bits"]
    assert law.theta(5) == pytest.approx((d[4] + d[6]) / 2)
    assert law.theta(8) == pytest.approx(d[6])  # flat above the trained bits
    assert law.theta(1) == pytest.approx(d[2] - (d[3] - d[2]))  # linear from the two nearest below
    assert law.theta(32) == 0.0


def test_model_ecr():
    eff = true_law("effsize")
    n = n_weights_of(np.array([16, 64, 256]))
    np.testing.assert_allclose(eff.model_ecr(n, 2), np.exp(LAWS["effsize"]["per_bits"][2]) * 32 / 2, rtol=1e-9)
    np.testing.assert_allclose(eff.model_ecr(n, 32), 1.0)
    pen = true_law("penalty")
    ecr = pen.model_ecr(n, 2)
    assert ecr[0] != pytest.approx(ecr[-1])  # the penalty form's ECR depends on the size
    # the float equivalent reaches exactly the law's error on the float curve
    nf = pen.float_equivalent(n, 2)
    np.testing.assert_allclose(pen.predict(nf, 32), pen.predict(n, 2), rtol=1e-9)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda d: d.assign(val_error=np.where(d.index == 3, np.nan, d.val_error)), "non-finite"),
        (lambda d: d.assign(val_error=np.where(d.index == 3, np.inf, d.val_error)), "non-finite"),
        (lambda d: d.assign(val_error=np.where(d.index == 3, 1.5, d.val_error)), "fraction in [0, 1]"),
        (lambda d: d.assign(val_error=np.where(d.index == 3, -0.1, d.val_error)), "fraction in [0, 1]"),
        (lambda d: d[d.bits < 32], "no float rows"),
        (lambda d: d.drop(columns="val_error"), "lacks column"),
    ],
)
def test_degenerate_tables_are_one_line(edit, needle):
    with pytest.raises(TableError, match=re.escape(needle)) as exc:
        S.cell_stats(edit(synthetic(n_seeds=2)))
    assert "\n" not in str(exc.value)


def test_too_few_widths_is_a_status_row_not_a_fit():
    tab = S.scaling_table(synthetic(widths=(8, 16, 32)), n_boot=5)
    assert list(tab["kind"]) == ["status"]
    assert "3 widths" in tab["note"].iloc[0] and S.fitted_methods(tab) == []
    with pytest.raises(TableError, match="no law was fitted: 3 widths"):
        S.law_from_table(tab)


def test_leave_one_width_out_by_hand():
    df = synthetic(seed_sd=0.001, rng=np.random.default_rng(1))
    stats = S.cell_stats(df)
    cv = S.cv_residuals(stats, "penalty", "width")
    held = cv[cv.held_out == 64]
    law = S.fit(stats[stats.width != 64], "penalty")
    np.testing.assert_allclose(held["predicted"], law.predict(held["n_weights"], held["bits"]), rtol=1e-6)
    assert set(cv.loc[cv.held_out.isin([8, 256]), "pool"]) == {"width_end"}
    assert set(cv.loc[cv.held_out.isin([16, 32, 64, 128]), "pool"]) == {"width"}


def test_the_law_reads_no_test_error():
    df = synthetic(seed_sd=0.002, rng=np.random.default_rng(7))
    a = S.scaling_table(df, n_boot=10)
    b = S.scaling_table(df.assign(test_error=np.random.default_rng(0).permutation(df.test_error.to_numpy())), n_boot=10)
    choice = ~a["kind"].isin(["cv", "coverage"])  # the nested check reads test means to measure coverage
    pd.testing.assert_frame_equal(a[choice].reset_index(drop=True), b[choice.to_numpy()].reset_index(drop=True))


def test_table_round_trip():
    df = synthetic(seed_sd=0.002, rng=np.random.default_rng(2))
    tab = S.scaling_table(df, n_boot=12, nested=False)
    law, model = S.fit_study(df, "fixed", n_boot=12)[:2]
    back, back_model = S.law_from_table(tab)
    n = n_weights_of(np.array(WIDTHS))
    for b in (1, 2, 5, 32):
        np.testing.assert_allclose(back.predict(n, b), law.predict(n, b), rtol=1e-12)
    assert len(back.boot) == 12
    assert {k: len(v) for k, v in back_model.pools.items()} == {k: len(v) for k, v in model.pools.items()}
    assert back_model.interval(0.03, "width") == model.interval(0.03, "width")


def test_one_law_per_method():
    a = synthetic("penalty", seed_sd=0.001, rng=np.random.default_rng(5), method="fixed")
    b = synthetic("additive", seed_sd=0.001, rng=np.random.default_rng(6), method="learned")
    tab = S.scaling_table(pd.concat([a, b[b.bits < 32]]), n_boot=5, nested=False)
    assert S.fitted_methods(tab) == ["fixed", "learned"]
    fixed, _ = S.law_from_table(tab, "fixed")
    learned, _ = S.law_from_table(tab, "learned")
    assert fixed.method == "fixed" and learned.method == "learned"
    assert fixed.predict(n_weights_of(32), 2) != pytest.approx(learned.predict(n_weights_of(32), 2))
    with pytest.raises(TableError, match="no law was fitted for method 'epoch'"):
        S.law_from_table(tab, "epoch")


# --------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------


def test_mixture_quantiles_match_monte_carlo():
    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.002, 25)
    q = mixture_quantiles(r, 0.003, [0.05, 0.5, 0.95])
    draws = rng.choice(r, 400_000) + rng.normal(0, 0.003, 400_000)
    np.testing.assert_allclose(q, np.quantile(draws, [0.05, 0.5, 0.95]), atol=2e-4)
    np.testing.assert_allclose(mixture_quantiles(r, 0.0, [0.0, 1.0]), [r.min(), r.max()])


def test_intervals_carry_the_evaluation_sets_noise_and_borrow_small_pools():
    model = IntervalModel({"width": np.zeros(10), "width_end": np.full(3, 0.01)}, N_VAL, N_TEST, 0.9)
    lo, hi = model.interval(0.05, "width")
    half = 1.6448536 * float(shift_sd(0.05, N_VAL, N_TEST))
    assert (hi - lo) / 2 == pytest.approx(half, rel=1e-3)
    # an end pool of 3 residuals borrows the inner pool
    assert model.pool("width_end").size == 13
    assert math.isnan(IntervalModel({}, N_VAL, N_TEST).interval(0.05, "width")[0])


@pytest.mark.parametrize("study_seed", [11, 12, 13])
def test_nested_coverage_on_studies_drawn_from_a_known_law(study_seed):
    """Held-out cells' test means fall inside their 90% intervals at about the
    nominal rate when the world is as the interval model says (seed noise
    shared by the two sets, each set its own sampling noise)."""
    rng = np.random.default_rng(study_seed)
    df = synthetic("penalty", n_seeds=3, seed_sd=0.002, rng=rng)
    val, test = S.cell_stats(df), S.cell_stats(df, "test_error")
    cv = S.nested_cv(val, test, N_VAL, N_TEST)
    assert set(cv["by"]) == {"width", "bits"}
    assert 0.75 <= cv["covered"].mean() <= 1.0


# --------------------------------------------------------------------------
# Read-off ECR
# --------------------------------------------------------------------------


def test_readoff_ecr_intervals():
    df = synthetic(seed_sd=0.002, rng=np.random.default_rng(1))
    a = readoff_ecr_intervals(df, n_boot=20, seed=1)
    b = readoff_ecr_intervals(df, n_boot=20, seed=1)
    pd.testing.assert_frame_equal(a, b)
    fl = a[a.bits == 32]
    assert (fl.ecr_lo == 1).all() and (fl.ecr_hi == 1).all()
    assert (a.ecr_lo <= a.ecr_hi).all()


def test_ecr_table_says_where_the_readoff_is_uninformative():
    df = synthetic(seed_sd=0.002, rng=np.random.default_rng(1))
    e = ecr_table(df, n_boot=30)
    bound = e["ecr_bound"].notna()
    assert not e.loc[bound, "readoff_informative"].any()
    wide = (e["ecr_hi"] / e["ecr_lo"]) > 2
    assert not e.loc[wide, "readoff_informative"].any()
    assert e.loc[~bound & ~wide & e.ecr_lo.notna(), "readoff_informative"].all()


# --------------------------------------------------------------------------
# Recommend
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,bits",
    [
        ("65536", 65536),
        (65536, 65536),
        ("64KiB", 524288),
        ("1.5 MB", 12_000_000),
        ("2e5 bits", 200_000),
        ("1B", 8),
        ("3 b", 3),
        ("1Mibit", 2**20),
        ("2kbit", 2000),
        ("1 GiB", 8 * 2**30),
    ],
)
def test_parse_budget_good(text, bits):
    assert parse_budget(text) == bits


@pytest.mark.parametrize("text", ["", "abc", "64 KB", "-5", "0", "0.5b", "12 parsecs", "1e400"])
def test_parse_budget_bad(text):
    with pytest.raises(UserError) as exc:
        parse_budget(text)
    assert "\n" not in str(exc.value) and "budget" in str(exc.value)


def test_format_bits():
    assert format_bits(524288) == "524,288 bits (64 KiB)"


def test_size_model_exact_polynomial():
    ws = (8, 16, 32, 64)
    df = pd.DataFrame(
        {
            "depth": 2,
            "width": list(ws),
            "n_weights": [3 * w * w + 5 * w + 7 for w in ws],
            "n_biases": [2 * w + 10 for w in ws],
            "quantized_layers": 3,
        }
    )
    sm = size_model(df)[2]
    assert sm.n_weights(100) == pytest.approx(3 * 100**2 + 5 * 100 + 7)
    assert sm.memory_bits(10, 2, "total") == pytest.approx((300 + 50 + 7) * 2 + 32 * 30 + 32 * 3)
    w = sm.max_width(357 * 2 + 1, 2)
    assert 10 <= w < 10.01


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    df = synthetic(seed_sd=0.001, rng=np.random.default_rng(9))
    df.to_parquet(d / "summary.parquet")
    S.scaling_table(df, n_boot=10, nested=False).to_parquet(d / "scaling.parquet")
    return d, df


def test_the_trained_answer_is_chosen_on_validation_and_names_the_smallest_tied(study):
    d, df = study
    budget = 60_000
    rec = advise(df, pd.read_parquet(d / "scaling.parquet"), budget)
    t = rec.trained
    assert (t["memory_bits"] <= budget).all()
    best = t["val"].min()
    named = t[t["named"]].iloc[0]
    tied = t[t["tied"]]
    assert named["memory_bits"] == tied["memory_bits"].min() and best in set(tied["val"])
    # tied: within TIE_Z standard errors of the difference of validation means
    for r in t.itertuples():
        b = t.loc[t["val"].idxmin()]
        assert r.tied == ((r.val - b["val"]) <= 2.0 * math.hypot(r.val_se, b["val_se"]))


def test_the_design_stays_inside_the_trained_widths_and_bits(study):
    d, df = study
    for budget in (30_000, 60_000, 400_000, parse_budget("1GiB")):
        rec = advise(df, pd.read_parquet(d / "scaling.parquet"), budget)
        des = rec.designs
        assert des["width"].between(8, 256).all()
        assert set(des["bits"]) <= set(BITS)
        assert (
            des["named"].sum() == 1 and (des["lo"] <= des["predicted"]).all() and (des["predicted"] <= des["hi"]).all()
        )
        x = rec.extrapolated
        if len(x):
            assert (~x["width"].between(8, 256) | ~x["bits"].isin(BITS)).all()
            assert x["width"].max() <= 512
    big = recommend(d, parse_budget("1GiB"))
    assert "fits the widest trained network (256)" in big and "no further" in big
    tiny = recommend(d, 100)
    assert "Trained: no trained cell fits." in tiny and "below every trained design" in tiny


def test_recommend_reads_the_pipelines_law_and_says_when_there_is_none(study, tmp_path):
    d, df = study
    df.to_parquet(tmp_path / "summary.parquet")
    text = recommend(tmp_path, 60_000)  # no scaling.parquet: no law is fitted here
    assert "Design:" not in text and "no law: scaling.parquet not given" in text
    small = synthetic(widths=(8, 16, 32), seed_sd=0.001, rng=np.random.default_rng(1))
    small.to_parquet(tmp_path / "summary.parquet")
    S.scaling_table(small, n_boot=5).to_parquet(tmp_path / "scaling.parquet")
    assert "no law: 3 widths: the law needs at least 4" in recommend(tmp_path, 60_000)


def test_recommend_refuses_bad_tables_in_one_line(tmp_path):
    with pytest.raises(UserError, match="summary.parquet"):
        recommend(tmp_path, 1000)
    df = synthetic(n_seeds=2)
    df.loc[2, "test_error"] = np.nan
    df.to_parquet(tmp_path / "summary.parquet")
    with pytest.raises(TableError, match="non-finite") as exc:
        recommend(tmp_path, 60_000)
    assert "\n" not in str(exc.value)
    synthetic(n_seeds=2).iloc[0:0].to_parquet(tmp_path / "summary.parquet")
    with pytest.raises(TableError, match="empty"):
        recommend(tmp_path, 60_000)


def test_one_seed_is_said(tmp_path):
    df = synthetic(n_seeds=1)
    df.to_parquet(tmp_path / "summary.parquet")
    assert "one seed" in recommend(tmp_path, 60_000)


def test_recommendation_table(study):
    d, df = study
    tab = recommendation_table(df, pd.read_parquet(d / "scaling.parquet"), [30_000, 60_000, 400_000])
    assert list(tab["budget_bits"]) == [30_000, 60_000, 400_000]
    assert (tab["design_memory_bits"] <= tab["budget_bits"]).all()
    assert (tab["trained_memory_bits"] <= tab["budget_bits"]).all()


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


def test_plots_draw(study):
    d, df = study
    tab = pd.read_parquet(d / "scaling.parquet")
    ecr = ecr_table(df, n_boot=8)
    fig = Figure()
    ax = fig.subplots()
    plot_scaling_fit(df, tab, ax)
    assert ax.get_xscale() == "log" and ax.get_ylabel().startswith("Validation error (%")
    assert "fitted on validation error" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "seed mean ± 1 SE" in labels and "fitted law" in labels
    fig2 = Figure()
    plot_ecr_bands(ecr, tab, fig2)
    panels = [a for a in fig2.get_axes() if a.get_visible()]
    assert len(panels) == len(BITS) - 1 and all(a.get_yscale() == "log" for a in panels)
