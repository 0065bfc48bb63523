"""Tests for qdesign.analysis.ecr: memory model, PAV, ECR and the memory/error frontier."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdesign.analysis.ecr import (
    FLOAT_BITS,
    best_under_budget,
    budget_grid,
    effective_compression_ratio,
    isotonic_nonincreasing,
    pareto_front,
)
from qdesign.core.memory import layer_memory_bits, network_memory_bits

# --------------------------------------------------------------------------
# Memory model
# --------------------------------------------------------------------------


def test_float_bits_constant():
    assert FLOAT_BITS == 32


def test_layer_memory_quantized_and_float():
    assert layer_memory_bits(78400, 100, 2) == (156800, 156800 + 32 + 100 * 32)
    assert layer_memory_bits(78400, 100, None) == (78400 * 32, 78400 * 32 + 100 * 32)
    # bits >= 32 is float: 32 bits per weight, no step.
    assert layer_memory_bits(1000, 10, 32) == (32000, 32000 + 320)
    assert layer_memory_bits(1000, 10, 64) == (32000, 32000 + 320)
    assert layer_memory_bits(1000, 10, 31) == (31000, 31000 + 32 + 320)


def test_network_memory_two_layer_mlp():
    quantized = [(784 * 100, 100, 2), (100 * 10, 10, 2)]
    weights_only = (78400 + 1000) * 2
    assert network_memory_bits(quantized) == (weights_only, weights_only + 2 * 32 + 110 * 32)

    floating = [(78400, 100, None), (1000, 10, None)]
    assert network_memory_bits(floating) == (79400 * 32, 79400 * 32 + 110 * 32)

    # Mixed: only the quantized layer stores a step.
    mixed = [(78400, 100, 8), (1000, 10, None)]
    w = 78400 * 8 + 1000 * 32
    assert network_memory_bits(mixed) == (w, w + 32 + 110 * 32)
    assert network_memory_bits([]) == (0, 0)
    assert network_memory_bits(iter(quantized)) == network_memory_bits(quantized)


def test_memory_rejects_bad_input():
    with pytest.raises(ValueError):
        layer_memory_bits(10, 1, 0)
    with pytest.raises(ValueError):
        layer_memory_bits(-1, 1, 2)
    with pytest.raises(ValueError):
        layer_memory_bits(10, -1, 2)


# --------------------------------------------------------------------------
# PAV
# --------------------------------------------------------------------------


def test_pav_small_exact_cases():
    np.testing.assert_allclose(isotonic_nonincreasing([0, 1, 2], [3, 1, 2]), [3, 1.5, 1.5])
    np.testing.assert_allclose(isotonic_nonincreasing([0, 1, 2], [1, 2, 3]), [2, 2, 2])
    np.testing.assert_allclose(isotonic_nonincreasing([0, 1, 2], [3, 2, 1]), [3, 2, 1])
    # Weighted pooling: (1*1 + 3*3) / 4 = 2.5
    np.testing.assert_allclose(isotonic_nonincreasing([0, 1], [1, 3], weights=[1, 3]), [2.5, 2.5])
    # A late violator pools back through several blocks: (3 + 2 + 7) / 3 = 4.
    np.testing.assert_allclose(isotonic_nonincreasing([0, 1, 2, 3], [5, 3, 2, 7]), [5, 4, 4, 4])
    assert isotonic_nonincreasing([], []).shape == (0,)


def test_pav_rejects_unsorted_x():
    with pytest.raises(ValueError):
        isotonic_nonincreasing([1, 0], [1, 2])


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(0, 12),  # x with duplicates
            st.floats(-100, 100, allow_nan=False),
            st.floats(0.1, 10, allow_nan=False),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_pav_matches_sklearn(data):
    from sklearn.isotonic import IsotonicRegression

    data = sorted(data, key=lambda r: r[0])
    x = np.array([r[0] for r in data], dtype=float)
    y = np.array([r[1] for r in data])
    w = np.array([r[2] for r in data])
    got = isotonic_nonincreasing(x, y, w)
    want = IsotonicRegression(increasing=False).fit_transform(x, y, sample_weight=w)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert np.all(np.diff(got) <= 1e-9)


def test_pav_matches_sklearn_seeded_distinct_x():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = rng.integers(1, 60)
        x = np.sort(rng.normal(size=n))
        y = -x + rng.normal(scale=1.0, size=n)
        got = isotonic_nonincreasing(x, y)
        want = IsotonicRegression(increasing=False).fit_transform(x, y)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# ECR
# --------------------------------------------------------------------------


def _table(rows, columns=("n_weights", "bits", "error")):
    return pd.DataFrame(rows, columns=list(columns))


BASIC = _table(
    [
        (100, 32, 0.3),
        (1000, 32, 0.2),
        (10000, 32, 0.1),
        (1000, 2, 0.15),  # midway in log between 1000 and 10000
        (1000, 2, 0.35),  # worse than the smallest float net
        (1000, 4, 0.05),  # better than the largest float net
        (1000, 8, 0.2),  # exactly on a float point
        (500, 3, 0.3),  # exactly at the curve's first end
        (500, 3, 0.1),  # exactly at the curve's last end
    ]
)


def test_ecr_hand_table():
    out = effective_compression_ratio(BASIC, average_seeds=False)
    few = out["float_equivalent_weights"].to_numpy()
    ecr = out["ecr"].to_numpy()
    bound = out["ecr_bound"].tolist()

    mid = math.sqrt(1000 * 10000)  # 3162.28
    assert few[3] == pytest.approx(mid, rel=1e-9)
    assert ecr[3] == pytest.approx(mid * 32 / (1000 * 2), rel=1e-9)
    assert ecr[3] == pytest.approx(50.596, abs=1e-3)
    assert few[4] == pytest.approx(100) and bound[4] == "upper"
    assert ecr[4] == pytest.approx(100 * 32 / (1000 * 2))
    assert few[5] == pytest.approx(10000) and bound[5] == "lower"
    assert ecr[5] == pytest.approx(10000 * 32 / (1000 * 4))
    assert few[6] == pytest.approx(1000) and pd.isna(bound[6])
    assert ecr[6] == pytest.approx(32 / 8)
    # Exactly at an end of the curve counts as inside.
    assert few[7] == pytest.approx(100) and pd.isna(bound[7])
    assert few[8] == pytest.approx(10000) and pd.isna(bound[8])
    # Float rows
    np.testing.assert_array_equal(few[:3], [100, 1000, 10000])
    np.testing.assert_array_equal(ecr[:3], [1.0, 1.0, 1.0])
    assert all(pd.isna(b) for b in bound[:3])
    assert [b for b in bound if not pd.isna(b)] == ["upper", "lower"]
    assert out["float_equivalent_weights"].dtype == float
    assert out["ecr"].dtype == float


def test_ecr_reference_bits_scales_ratio():
    a = effective_compression_ratio(BASIC, average_seeds=False)
    b = effective_compression_ratio(BASIC, reference_bits=16, average_seeds=False)
    q = BASIC["bits"] < 32
    np.testing.assert_allclose(b.loc[q, "ecr"], a.loc[q, "ecr"] / 2)
    np.testing.assert_array_equal(b.loc[~q, "ecr"], 1.0)


def test_ecr_nonmonotone_float_curve_isotonic_and_ties():
    cells = _table(
        [
            (10, 32, 0.3),
            (100, 32, 0.2),
            (1000, 32, 0.25),
            (10000, 32, 0.1),
            (50, 2, 0.225),  # flat stretch at 0.225 over n=100 and n=1000 -> smallest n
            (50, 2, 0.25),  # between 10 (0.3) and 100 (0.225): t = 2/3
            (50, 2, 0.15),  # between 1000 (0.225) and 10000 (0.1): t = 0.6
            (50, 2, 0.2),  # same segment: t = 0.2 (raw float point 100 is gone)
        ]
    )
    out = effective_compression_ratio(cells, average_seeds=False)
    few = out["float_equivalent_weights"].to_numpy()
    assert few[4] == pytest.approx(100, rel=1e-9)
    assert few[5] == pytest.approx(10 ** (1 + 2 / 3), rel=1e-9)  # 46.4
    assert few[6] == pytest.approx(10**3.6, rel=1e-9)  # 3981
    assert few[7] == pytest.approx(10**3.2, rel=1e-9)  # 1585
    assert out["ecr"].iloc[4] == pytest.approx(100 * 32 / (50 * 2), rel=1e-9)
    assert out["ecr_bound"].iloc[4:].isna().all()


def test_ecr_float_curve_weighted_by_rows_per_size():
    # n=1000 has three float rows at 0.3, n=100 one at 0.2: pooled (0.2 + 3*0.3)/4 = 0.275.
    cells = _table(
        [
            (10, 32, 0.5),
            (100, 32, 0.2),
            (1000, 32, 0.3),
            (1000, 32, 0.3),
            (1000, 32, 0.3),
            (10000, 32, 0.05),
            (20, 2, 0.275),
            (20, 2, 0.4),
        ]
    )
    out = effective_compression_ratio(cells, average_seeds=False)
    few = out["float_equivalent_weights"].to_numpy()
    assert few[6] == pytest.approx(100, rel=1e-9)
    assert few[7] == pytest.approx(10 ** (1 + 0.1 / 0.225), rel=1e-9)


def test_ecr_single_float_size():
    cells = _table([(100, 32, 0.2), (50, 2, 0.2), (50, 2, 0.3), (50, 2, 0.1)])
    out = effective_compression_ratio(cells, average_seeds=False)
    np.testing.assert_allclose(out["float_equivalent_weights"], [100, 100, 100, 100])
    assert out["ecr_bound"].iloc[0] is None or pd.isna(out["ecr_bound"].iloc[0])
    assert pd.isna(out["ecr_bound"].iloc[1])
    assert out["ecr_bound"].iloc[2:].tolist() == ["upper", "lower"]


def _seeded():
    rows = []
    for seed, (f1, f2, f3, q) in enumerate([(0.30, 0.20, 0.10, 0.14), (0.32, 0.22, 0.12, 0.16)]):
        rows += [
            ("s", 8, 100, 32, f1, seed),
            ("s", 16, 1000, 32, f2, seed),
            ("s", 32, 10000, 32, f3, seed),
            ("s", 16, 1000, 2, q, seed),
        ]
    rows.append(("s", 8, 100, 4, 0.5, 0))  # one seed only
    return pd.DataFrame(rows, columns=["study", "width", "n_weights", "bits", "error", "seed"])


def test_ecr_averages_seeds():
    cells = _seeded()
    out = effective_compression_ratio(cells)
    assert len(out) == 5
    assert "seed" not in out.columns
    # Order of first appearance of each cell.
    assert list(zip(out["n_weights"], out["bits"])) == [
        (100, 32),
        (1000, 32),
        (10000, 32),
        (1000, 2),
        (100, 4),
    ]
    np.testing.assert_allclose(out["error"], [0.31, 0.21, 0.11, 0.15, 0.5])
    np.testing.assert_allclose(out["error_std"].iloc[:4], math.sqrt(2 * 0.01**2))
    assert math.isnan(out["error_std"].iloc[4])
    assert out["n_seeds"].tolist() == [2, 2, 2, 2, 1]
    # Averaged curve 0.31, 0.21, 0.11; e = 0.15 sits at t = 0.6 between 1000 and 10000.
    assert out["float_equivalent_weights"].iloc[3] == pytest.approx(10**3.6, rel=1e-9)
    assert out["ecr"].iloc[3] == pytest.approx(10**3.6 * 32 / 2000, rel=1e-9)
    assert out["ecr_bound"].iloc[4] == "upper"
    assert out["study"].tolist() == ["s"] * 5
    assert out["width"].tolist() == [8, 16, 32, 16, 8]


def test_ecr_without_seed_averaging_keeps_rows():
    cells = _seeded()
    cells.index = [f"r{i}" for i in range(len(cells))]
    out = effective_compression_ratio(cells, average_seeds=False)
    assert list(out.index) == list(cells.index)
    pd.testing.assert_frame_equal(out[cells.columns], cells)
    assert "n_seeds" not in out.columns
    # Curve from per-n_weights means 0.31, 0.21, 0.11 (same as averaged).
    # Seed 0 quantized e = 0.14: t = 0.7; seed 1 e = 0.16: t = 0.5.
    assert out.loc["r3", "float_equivalent_weights"] == pytest.approx(10**3.7, rel=1e-9)
    assert out.loc["r7", "float_equivalent_weights"] == pytest.approx(10**3.5, rel=1e-9)
    # Float rows are their own equivalent, even off the averaged curve.
    assert out.loc["r0", "ecr"] == 1.0 and out.loc["r0", "float_equivalent_weights"] == 100


def test_ecr_preserves_row_order_and_does_not_mutate():
    # Unique (n_weights, bits) cells, so averaging keeps one row per input row.
    cells = BASIC.drop_duplicates(["n_weights", "bits"]).sample(frac=1.0, random_state=3)
    assert len(cells) == 7
    before = cells.copy()
    out = effective_compression_ratio(cells, average_seeds=False)
    pd.testing.assert_frame_equal(cells, before)
    assert list(out.index) == list(cells.index)
    out2 = effective_compression_ratio(cells)
    pd.testing.assert_frame_equal(cells, before)
    assert list(zip(out2["n_weights"], out2["bits"], out2["error"])) == list(
        zip(cells["n_weights"], cells["bits"], cells["error"])
    )
    np.testing.assert_allclose(out2["ecr"], out["ecr"])


@pytest.mark.parametrize(
    "cells, match",
    [
        (BASIC.drop(columns="error"), "error"),
        (BASIC.drop(columns="n_weights"), "n_weights"),
        (BASIC.drop(columns="bits"), "bits"),
        (_table([(100, 2, 0.3), (1000, 4, 0.2)]), "float"),
        (_table([(100, 32, 0.3), (0, 2, 0.2)]), "n_weights"),
        (_table([(100, 32, 0.3), (-5, 2, 0.2)]), "n_weights"),
        (_table([(100, 32, 0.3), (100, 0, 0.2)]), "bits"),
        (_table([(100, 32, 0.3), (100, 2, -0.1)]), "error"),
        (_table([(100, 32, 0.3), (100, 2, 1.5)]), "error"),
        (_table([(100, 32, 0.3), (100, 2, float("nan"))]), "error"),
        (_table([(100, 32, 0.3)]).iloc[:0], "float"),
    ],
)
def test_ecr_errors(cells, match):
    with pytest.raises(ValueError, match=match):
        effective_compression_ratio(cells)


def test_ecr_rejects_mixed_studies():
    cells = _seeded()
    cells.loc[0, "study"] = "other"
    with pytest.raises(ValueError, match="stud"):
        effective_compression_ratio(cells)


# --------------------------------------------------------------------------
# Frontier
# --------------------------------------------------------------------------


def test_pareto_hand_case():
    cells = pd.DataFrame(
        {
            "memory_bits": [100, 100, 100, 200, 200, 50, 300, 300],
            "error": [0.5, 0.5, 0.6, 0.5, 0.3, 0.9, 0.3, 0.1],
        },
        index=list("abcdefgh"),
    )
    front = pareto_front(cells)
    # c: equal memory, higher error; d: equal error, higher memory; g: dominated by e.
    assert list(front.index) == ["f", "a", "b", "e", "h"]
    pd.testing.assert_frame_equal(front, cells.loc[["f", "a", "b", "e", "h"]])


def test_pareto_custom_columns_and_empty():
    cells = pd.DataFrame({"mem": [2, 1], "err": [0.1, 0.2]})
    assert list(pareto_front(cells, memory_col="mem", error_col="err").index) == [1, 0]
    assert pareto_front(cells.iloc[:0], memory_col="mem", error_col="err").empty
    with pytest.raises(ValueError):
        pareto_front(cells)


def _brute_force_front(mem, err):
    keep = []
    for i in range(len(mem)):
        dominated = any(
            mem[j] <= mem[i] and err[j] <= err[i] and (mem[j] < mem[i] or err[j] < err[i]) for j in range(len(mem))
        )
        if not dominated:
            keep.append(i)
    return keep


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.integers(0, 5)),  # small ranges: many duplicates
        min_size=0,
        max_size=40,
    )
)
def test_pareto_matches_brute_force(points):
    mem = [p[0] * 100 for p in points]
    err = [p[1] / 10 for p in points]
    cells = pd.DataFrame({"memory_bits": mem, "error": err, "tag": range(len(points))})
    cells.index = [f"i{k}" for k in range(len(points))]
    front = pareto_front(cells)
    want = _brute_force_front(mem, err)
    assert sorted(front["tag"]) == want
    assert set(front.index) == {f"i{k}" for k in want}
    keys = list(zip(front["memory_bits"], front["error"]))
    assert keys == sorted(keys)


def test_pareto_random_floats_brute_force():
    rng = np.random.default_rng(1)
    mem = rng.integers(1, 50, size=300).astype(float)
    err = rng.random(300).round(2)
    front = pareto_front(pd.DataFrame({"memory_bits": mem, "error": err}))
    assert sorted(front.index) == _brute_force_front(mem, err)


BUDGET_CELLS = pd.DataFrame(
    {
        "memory_bits": [100, 200, 200, 400, 300, 250],
        "error": [0.5, 0.3, 0.3, 0.1, 0.2, 0.2],
        "bits": [2, 4, 2, 32, 2, 8],
        "name": ["A", "B", "C", "E", "X", "Y"],
    },
    index=[10, 11, 12, 13, 14, 15],
)


def test_best_under_budget_hand_cases():
    out = best_under_budget(BUDGET_CELLS, [50, 100, 199, 200, 249, 300, 399, 1000])
    assert list(out.columns) == ["budget_bits", "memory_bits", "error", "bits", "name"]
    assert out["budget_bits"].tolist() == [50, 100, 199, 200, 249, 300, 399, 1000]
    # 50: nothing fits, row kept with NaN.
    assert out.iloc[0, 1:].isna().all()
    # 200: B and C tie on (error, memory); C has fewer bits.
    # 300: Y (250) and X (300) tie on error; smaller memory wins.
    assert out["name"].tolist()[1:] == ["A", "A", "C", "C", "Y", "Y", "E"]
    assert out["memory_bits"].iloc[4] == 200


def test_best_under_budget_without_bits_column_keeps_input_order():
    cells = BUDGET_CELLS.drop(columns="bits")
    out = best_under_budget(cells, [200])
    assert out["name"].tolist() == ["B"]


def test_best_under_budget_nothing_fits():
    out = best_under_budget(BUDGET_CELLS, [1, 2])
    assert len(out) == 2
    assert out.drop(columns="budget_bits").isna().all().all()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 8), st.integers(0, 4), st.integers(2, 5)), min_size=0, max_size=25),
    st.lists(st.integers(0, 9), min_size=1, max_size=6),
)
def test_best_under_budget_matches_brute_force(rows, budgets):
    cells = pd.DataFrame(rows, columns=["memory_bits", "error", "bits"]).astype(
        {"memory_bits": int, "error": float, "bits": int}
    )
    cells["pos"] = range(len(cells))
    out = best_under_budget(cells, budgets)
    assert len(out) == len(budgets)
    for b, (_, got) in zip(budgets, out.iterrows()):
        fits = [r for r in cells.itertuples() if r.memory_bits <= b]
        if not fits:
            assert pd.isna(got["pos"])
            continue
        best = min(fits, key=lambda r: (r.error, r.memory_bits, r.bits, r.pos))
        assert got["pos"] == best.pos


def test_budget_grid():
    grid = budget_grid([100, 1, 10], n=3)
    np.testing.assert_allclose(grid, [1, 10, 100])
    grid = budget_grid(np.array([3.0, 7e6, 12.0]))
    assert len(grid) == 25
    assert grid[0] == 3.0 and grid[-1] == 7e6
    assert np.all(np.diff(np.log(grid)) == pytest.approx(np.log(7e6 / 3) / 24))
    with pytest.raises(ValueError):
        budget_grid([], n=3)
    with pytest.raises(ValueError):
        budget_grid([0, 10])
    with pytest.raises(ValueError):
        budget_grid([1, 10], n=1)


def test_budget_grid_feeds_best_under_budget():
    grid = budget_grid(BUDGET_CELLS["memory_bits"], n=4)
    out = best_under_budget(BUDGET_CELLS, grid)
    assert out["name"].iloc[0] == "A" and out["name"].iloc[-1] == "E"


def test_pareto_scales_n_log_n():
    # 200k rows: an O(n^2) pairwise check would not finish (or not fit in memory).
    rng = np.random.default_rng(2)
    n = 200_000
    cells = pd.DataFrame({"memory_bits": rng.integers(1, 10**6, n), "error": rng.random(n)})
    front = pareto_front(cells)
    mem = front["memory_bits"].to_numpy()
    err = front["error"].to_numpy()
    assert np.all(np.diff(mem) > 0) and np.all(np.diff(err) < 0)
    assert front.index[0] == cells.sort_values(["memory_bits", "error"]).index[0]
    assert err[-1] == cells["error"].min()
