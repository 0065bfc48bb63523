"""Speed-ups of issue 28 that must not change a number, pinned against the
code they replaced."""

import dataclasses

import numpy as np
import pandas as pd

from qdesign.analysis import scaling as S

from .test_scaling import synthetic


def _law_from_rows_before(rows: pd.DataFrame, level: float) -> S.ScalingLaw:
    """law_from_table's per-law reconstruction before issue 28 (itertuples over a groupby)."""
    p = {r.name: r.value for r in rows.itertuples() if r.name not in ("g", "d")}
    g = {int(r.bits): float(r.value) for r in rows.itertuples() if r.name == "g"}
    d = {int(r.bits): float(r.value) for r in rows.itertuples() if r.name == "d"}
    return S.ScalingLaw(
        form=str(rows["form"].iloc[0]),
        E=float(p["E"]),
        a0=float(p["a0"]),
        alpha=float(p["alpha"]),
        n0=float(p["n0"]),
        g_trained=g,
        g_form=str(rows["g_form"].iloc[0]),
        gamma=float(p["gamma"]),
        n_range=(float(p["n_min"]), float(p["n_max"])),
        d_trained=d,
        g_scale=float(p.get("g_scale", 1.0)),
        level=level,
    )


def _law_from_table_before(table: pd.DataFrame) -> S.ScalingLaw:
    params = table[table["kind"] == "param"]
    lv = params["level"].dropna()
    level = float(lv.iloc[0]) if len(lv) else S.DEFAULT_LEVEL
    boot = table[table["kind"] == "boot"]
    laws = tuple(_law_from_rows_before(g, level) for _, g in boot.groupby("boot", sort=True))
    return dataclasses.replace(_law_from_rows_before(params, level), boot=laws)


def test_law_from_table_rebuilds_the_same_laws():
    df = synthetic(noise=0.001, n_seeds=3, rng=np.random.default_rng(2))
    tab = S.scaling_table(df, n_boot=15, seed=0)
    # shuffled rows: replicates are taken in ascending order, rows in table order either way
    for table in (tab, tab.sample(frac=1.0, random_state=0)):
        got, want = S.law_from_table(table), _law_from_table_before(table)
        assert repr(got) == repr(want)
        assert len(got.boot) == 15
