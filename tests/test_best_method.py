"""qdesign.analysis.best_method: the best retraining method per cell, chosen
on validation error and reported on test error, with its margin."""

import math

import pandas as pd
import pytest

from qdesign.analysis.best_method import best_methods
from qdesign.core.errors import TableError


def _rows(width, bits, method, vals, tests, seeds=(0, 1)):
    return [
        dict(
            study="s", model="fcdnn", depth=2, width=width, bits=bits, method=method, seed=s, val_error=v, test_error=e
        )
        for s, v, e in zip(seeds, vals, tests)
    ]


def summary():
    rows = []
    rows += _rows(8, 32, None, [0.05, 0.05], [0.05, 0.05])  # float rows: never a method
    rows += _rows(8, 2, "fixed", [0.10, 0.12], [0.11, 0.13])
    rows += _rows(8, 2, "learned", [0.08, 0.09], [0.10, 0.12])
    rows += _rows(8, 2, "distill", [0.085, 0.095], [0.09, 0.10])
    rows += _rows(16, 2, "fixed", [0.07, 0.07], [0.08, 0.08])
    rows += _rows(16, 4, "fixed", [0.05, 0.06], [0.05, 0.07])
    rows += _rows(16, 4, "epoch", [0.06, 0.05], [0.04, 0.05])  # a tie on validation
    return pd.DataFrame(rows)


def test_best_is_chosen_on_validation_and_reported_on_test():
    t = best_methods(summary()).set_index(["width", "bits"])
    assert list(t.index) == [(8, 2), (16, 2), (16, 4)]
    c = t.loc[(8, 2)]
    # learned has the lowest validation error although distill is better on test
    assert c["method"] == "learned" and c["runner_up"] == "distill" and c["n_methods"] == 3
    assert c["val_error"] == pytest.approx(0.085) and c["test_error"] == pytest.approx(0.11)
    assert c["margin_val"] == pytest.approx(0.005)
    assert c["margin_test"] == pytest.approx(0.095 - 0.11)  # negative: the runner-up did better on test
    diffs = [0.09 - 0.10, 0.10 - 0.12]  # per seed, runner-up minus best
    se = abs(diffs[0] - diffs[1]) / math.sqrt(2) / math.sqrt(2)
    assert c["margin_test_se"] == pytest.approx(se)


def test_one_method_has_no_runner_up_and_ties_go_to_the_registry_order():
    t = best_methods(summary()).set_index(["width", "bits"])
    alone = t.loc[(16, 2)]
    assert alone["method"] == "fixed" and pd.isna(alone["runner_up"]) and alone["n_methods"] == 1
    assert math.isnan(alone["margin_test"]) and math.isnan(alone["margin_test_se"])
    tie = t.loc[(16, 4)]
    assert tie["method"] == "fixed" and tie["runner_up"] == "epoch" and tie["margin_val"] == 0


def test_tables_from_before_the_method_axis_and_bad_tables():
    old = summary().query("method == 'fixed' or method.isna()").drop(columns="method")
    t = best_methods(old)
    assert set(t["method"]) == {"fixed"} and (t["n_methods"] == 1).all()
    with pytest.raises(TableError, match="lacks column\\(s\\) val_error"):
        best_methods(summary().drop(columns="val_error"))
    empty = best_methods(summary().query("bits == 32"))
    assert empty.empty and "margin_test" in empty.columns
