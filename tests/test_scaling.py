"""Tests for qdesign.analysis.scaling (the error(size, bits) law), qdesign.analysis.recommend and
qdesign.figures.scaling."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from qdesign.analysis import scaling as S
from qdesign.analysis.recommend import format_bits, parse_budget, recommend, size_model
from qdesign.core.errors import UserError
from qdesign.figures.scaling import plot_ecr_bands, plot_scaling_fit

E_TRUE, A_TRUE, ALPHA_TRUE = 0.02, 30.0, 0.5
G_TRUE = {2: 0.5, 3: 0.8, 4: 0.95, 32: 1.0}
WIDTHS = (8, 16, 32, 64, 128, 256)


def n_weights_of(width):
    """An FCDNN-like size: one hidden layer of width w between 784 inputs and 10 outputs."""
    return 794 * np.asarray(width)


def true_error(n, bits, g=G_TRUE):
    return E_TRUE + A_TRUE * (np.asarray(n, float) * np.vectorize(g.get)(bits)) ** -ALPHA_TRUE


def synthetic(noise=0.0, n_seeds=1, rng=None, g=G_TRUE, widths=WIDTHS):
    rows = []
    for w in widths:
        for b in g:
            for s in range(n_seeds):
                n = int(n_weights_of(w))
                e = float(true_error(n, b, g)) + (rng.normal(0, noise) if noise else 0.0)
                rows.append(
                    {
                        "study": "syn",
                        "model": "fcdnn",
                        "depth": 1,
                        "width": w,
                        "bits": b,
                        "seed": s,
                        "n_weights": n,
                        "n_biases": w + 10,
                        "quantized_layers": 2,
                        "test_error": e,
                        "memory_bits_weights": n * b,
                        "memory_bits_total": n * b + 32 * (w + 10) + (64 if b < 32 else 0),
                    }
                )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------


def test_exact_recovery_without_noise():
    law = S.fit(synthetic(), weights="uniform")
    assert pytest.approx(E_TRUE, rel=1e-6) == law.E
    assert law.alpha == pytest.approx(ALPHA_TRUE, rel=1e-6)
    assert pytest.approx(A_TRUE, rel=1e-5) == law.A
    for b, g in G_TRUE.items():
        assert law.g_trained[b] == pytest.approx(g, rel=1e-6)
    n = np.geomspace(1e3, 1e6, 7)
    np.testing.assert_allclose(law.predict(n, 3), true_error(n, 3), rtol=1e-6)
    assert law.model_ecr(2) == pytest.approx(0.5 * 32 / 2, rel=1e-6)


def test_recovery_with_noise_and_determinism():
    df = synthetic(noise=0.001, n_seeds=4, rng=np.random.default_rng(1))
    law = S.fit(df)
    assert law.alpha == pytest.approx(ALPHA_TRUE, abs=0.1)
    for b in (2, 3, 4):
        assert law.g_trained[b] == pytest.approx(G_TRUE[b], abs=0.1)
    again = S.fit(df)
    assert again.params() == law.params() and again.g_trained == law.g_trained


def test_fit_accepts_error_column_and_needs_float_rows():
    df = synthetic().rename(columns={"test_error": "error"})[["n_weights", "bits", "error"]]
    assert S.fit(df).alpha == pytest.approx(ALPHA_TRUE, rel=1e-5)
    with pytest.raises(ValueError, match="float"):
        S.fit(df[df.bits < 32])


def test_parametric_g_for_untrained_bits():
    gamma, scale = 1.5, 1.05
    g = {b: float(S.g_parametric(b, gamma, "kumar_c", scale)) for b in (2, 3, 4, 6)} | {32: 1.0}
    law = S.fit(synthetic(g=g), g_form="kumar_c", weights="uniform")
    assert law.gamma == pytest.approx(gamma, rel=1e-4) and law.g_scale == pytest.approx(scale, rel=1e-4)
    for b in (1, 5, 7):
        assert law.g(b) == pytest.approx(float(S.g_parametric(b, gamma, "kumar_c", scale)), rel=1e-4)
    assert S.g_parametric(32, 2.0, "kumar") == pytest.approx(1.0)
    assert law.g(32) == 1.0


def test_bootstrap_interval_coverage():
    """~90% intervals of a prediction cover the truth in most repetitions, and are not trivially wide."""
    n_star, b_star = float(n_weights_of(40)), 2
    truth = float(true_error(n_star, b_star))
    hits, widths = 0, []
    reps = 12
    for r in range(reps):
        df = synthetic(noise=0.002, n_seeds=6, rng=np.random.default_rng(100 + r), widths=(8, 16, 32, 64, 128))
        law = S.bootstrap(df, n_boot=40, seed=r, level=0.9)
        lo, hi = law.predict_interval(n_star, b_star)
        hits += bool(lo <= truth <= hi)
        widths.append(float(hi - lo))
    assert hits >= 0.6 * reps
    assert np.median(widths) < 0.004  # the per-cell standard error is 0.002 / sqrt(6)


def test_bootstrap_is_deterministic():
    df = synthetic(noise=0.002, n_seeds=3, rng=np.random.default_rng(5))
    a = S.bootstrap(df, n_boot=10, seed=3)
    b = S.bootstrap(df, n_boot=10, seed=3)
    assert [x.params() for x in a.boot] == [x.params() for x in b.boot]


# --------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------


def test_leave_one_width_out_by_hand():
    """Exact law data with one cell raised by 0.01: its fold predicts the truth, so the
    error there is 0.01 on that cell and 0 on the other; MAE 0.005, max 0.01."""
    widths = (8, 16, 32, 64, 128)
    g = {2: 0.5, 32: 1.0}
    df = synthetic(g=g, widths=widths)
    bump = (df.width == 32) & (df.bits == 2)
    df.loc[bump, "test_error"] += 0.01
    cv = S.cv_leave_one_width_out(df, weights="uniform")
    fold = cv[cv.held_out == 32].set_index("bits")
    assert fold.loc[2, "abs_error"] == pytest.approx(0.01, abs=1e-6)
    assert fold.loc[32, "abs_error"] == pytest.approx(0.0, abs=1e-6)
    s = S.cv_summary(cv).set_index("held_out")
    assert s.loc[32, "mae"] == pytest.approx(0.005, abs=1e-6)
    assert s.loc[32, "max_abs"] == pytest.approx(0.01, abs=1e-6)
    assert s.loc[32, "n_cells"] == 2
    # the fit of every other fold sees the bump, so it errs somewhere
    assert (s.drop(index=32)["max_abs"] > 1e-4).any()


def test_leave_one_bits_out_exact_for_interior_bits():
    g = {b: float(S.g_parametric(b, 1.5, "kumar_c", 1.05)) for b in (2, 3, 4, 6)} | {32: 1.0}
    cv = S.cv_leave_one_bits_out(synthetic(g=g), g_form="kumar_c", weights="uniform")
    s = S.cv_summary(cv).set_index("held_out")
    assert s.loc[3, "max_abs"] < 1e-6 and s.loc[4, "max_abs"] < 1e-6
    assert set(s.index) == {2, 3, 4, 6}


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def test_scaling_table_round_trip():
    df = synthetic(noise=0.001, n_seeds=3, rng=np.random.default_rng(2))
    tab = S.scaling_table(df, n_boot=12, seed=0)
    assert set(tab["kind"]) == {"param", "g", "ecr_model", "cv", "boot"}
    ecr = tab[tab.kind == "ecr_model"].set_index("bits")
    assert {1.0, 7.0, 10.0} <= set(ecr.index)
    assert (ecr["lo"] <= ecr["value"] + 1e-12).all() or (ecr["lo"] <= ecr["hi"]).all()
    law = S.law_from_table(tab)
    direct = S.bootstrap(df, n_boot=12, seed=0)
    n = np.geomspace(1e3, 1e6, 5)
    for b in (1, 2, 3, 7, 32):
        np.testing.assert_allclose(law.predict(n, b), direct.predict(n, b), rtol=1e-12)
        np.testing.assert_allclose(law.predict_interval(n, b), direct.predict_interval(n, b), rtol=1e-12)
    cv = tab[tab.kind == "cv"]
    assert set(cv["name"]) == {"width", "bits"} and cv["mae"].notna().all()


def test_readoff_ecr_intervals():
    df = synthetic(noise=0.002, n_seeds=3, rng=np.random.default_rng(3))
    a = S.readoff_ecr_intervals(df, n_boot=20, seed=1)
    b = S.readoff_ecr_intervals(df, n_boot=20, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["width", "bits", "ecr_lo", "ecr_hi"]
    assert len(a) == len(WIDTHS) * len(G_TRUE)
    fl = a[a.bits == 32]
    assert (fl.ecr_lo == 1).all() and (fl.ecr_hi == 1).all()
    assert (a.ecr_lo <= a.ecr_hi).all()


def test_scaling_does_not_import_torch():
    code = (
        "import sys, qdesign.analysis.scaling, qdesign.analysis.recommend, qdesign.figures.scaling; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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


def test_recommend_hand_made(tmp_path):
    df = synthetic(n_seeds=2)
    df.to_parquet(tmp_path / "summary.parquet")
    # Budget 60,000 bits: trained cells that fit are (width, bits) (8, 2): 12,704 bits; (8, 3): 19,056;
    # (8, 4): 25,408; (16, 2): 25,408; (16, 3): 38,112; (16, 4): 50,816; (32, 2): 50,816.  Their effective
    # sizes N * g: 3,176; 5,082; 6,034; 6,352; 10,163; 12,069; 12,704: the best is width 32, 2 bits.
    text = recommend(tmp_path, 60_000)
    assert "best cell that fits is width 32, 2 bits" in text
    # The law's design: for each bits the largest width with 794 * w * b <= budget, the lowest true error.
    cand = {b: math.floor(60_000 / (794 * min(b, 32))) for b in range(1, 9)} | {32: math.floor(60_000 / (794 * 32))}
    err = {b: float(S.fit(df).predict(794 * w, b)) for b, w in cand.items() if w >= 1}
    best = min(err, key=err.get)
    label = f"{best} bit{'s' if best != 1 else ''}" if best < 32 else "float"
    assert f"best design is width {cand[best]}, {label}" in text
    big = recommend(tmp_path, parse_budget("1MiB"))
    assert "outside the trained widths" in big
    tiny = recommend(tmp_path, 100)
    assert "no trained cell fits" in tiny


def test_recommend_missing_study(tmp_path):
    with pytest.raises(UserError, match="summary.parquet"):
        recommend(tmp_path, 1000)


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


def test_plots_draw():
    df = synthetic(noise=0.001, n_seeds=3, rng=np.random.default_rng(4))
    tab = S.scaling_table(df, n_boot=8, cv="none")
    from qdesign.analysis.ecr import effective_compression_ratio

    ecr = effective_compression_ratio(
        df.assign(error=df.test_error)[["study", "width", "n_weights", "bits", "seed", "error"]]
    )
    ecr = ecr.merge(S.readoff_ecr_intervals(df, n_boot=8), on=["width", "bits"])
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    plot_scaling_fit(df, tab, ax1)
    plot_ecr_bands(ecr, tab, ax2)
    assert ax1.get_xscale() == "log" and ax1.get_ylabel() == "Test error (%)"
    assert ax2.get_yscale() == "log" and "ECR" in ax2.get_ylabel()
    assert len(ax1.get_legend().get_texts()) == len(G_TRUE) + 1


def test_hybrid_g_interpolates_inside_and_is_flat_above():
    g = {2: 0.5, 4: 0.9, 6: 1.0, 32: 1.0}
    law = S.fit(synthetic(g=g), weights="uniform")  # default g_form: hybrid
    assert law.g_form == "hybrid"
    assert law.g(5) == pytest.approx(math.sqrt(0.9 * 1.0), rel=1e-5)  # log-linear between 4 and 6
    assert law.g(3) == pytest.approx(math.sqrt(0.5 * 0.9), rel=1e-5)
    assert law.g(8) == pytest.approx(1.0, rel=1e-5)  # flat above the trained bits
    assert law.g(1) == pytest.approx(float(S.g_parametric(1, law.gamma, "kumar_c", law.g_scale)))
    assert law.g(1) < law.g(2)
