"""Per-study tables from per-cell metrics files."""

import numpy as np
import pytest

from qdesign.analysis.aggregate import aggregate, read_cells

from .cell_rows import cell, write


def test_tables_from_cells(tmp_path):
    rows = []
    for seed in (0, 1):
        for w, e in ((8, 0.30), (16, 0.20), (32, 0.10)):
            rows.append(cell(w, 32, seed, e + 0.01 * seed))
            rows.append(cell(w, 2, seed, e + 0.05 + 0.01 * seed, direct=e + 0.3))
    summary, ecr, frontier = aggregate(write(tmp_path, rows[::-1]), n_budgets=5)
    assert len(summary) == 12 and summary[["width", "bits", "seed"]].values.tolist()[0] == [8, 2, 0]
    assert list(summary["steps"].iloc[0]) == [0.1, 0.2]
    assert len(ecr) == 6 and set(ecr["n_seeds"]) == {2}
    q16 = ecr[(ecr.width == 16) & (ecr.bits == 2)].iloc[0]
    assert q16["error"] == pytest.approx(0.255) and q16["direct_error"] == pytest.approx(0.5)
    # 0.255 lies between the float errors 0.305 (n=800) and 0.205 (n=1600): halfway in log n
    assert q16["float_equivalent_weights"] == pytest.approx(np.sqrt(800 * 1600))
    assert q16["ecr"] == pytest.approx(np.sqrt(800 * 1600) * 32 / (1600 * 2))
    assert q16["memory_bits"] == 1600 * 2
    pareto = frontier[frontier.kind == "pareto"]
    budgets = frontier[frontier.kind == "budget"]
    assert len(budgets) == 5 and budgets["budget_bits"].is_monotonic_increasing
    # every 2-bit net uses 1/16 the memory of the float net of its width
    assert set(pareto["bits"]) == {2, 32} and pareto["memory_bits"].is_monotonic_increasing
    assert budgets["error"].iloc[-1] == pytest.approx(0.105)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="duplicate cells"):
        read_cells(write(tmp_path, [cell(8, 2, 0, 0.1), cell(8, 2, 0, 0.2)]))
    with pytest.raises(ValueError, match="several studies"):
        read_cells(write(tmp_path, [cell(8, 2, 0, 0.1), cell(8, 2, 1, 0.2, study="t")]))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot read cell metrics"):
        read_cells([bad])
