"""The design model's closed loop, end to end on digits: the designs recommended
for a study's budgets are trained as ordinary cells (a width the grid did not
have gets its own float networks), and recommendations.parquet sets each
measured test error beside the interval the law predicted."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from qdesign.core.layout import REPO_ROOT
from qdesign.run.invocation import snakemake_command

from .snakemake_runs import DIGITS_GRID

pytestmark = pytest.mark.slow

STUDY = {**DIGITS_GRID, "recommend": {"budgets": [3000, 12000, "4KiB"]}}


def _run(workdir, *args):
    import subprocess  # noqa: PLC0415

    return subprocess.run(snakemake_command(workdir, "--cores", 2, *args), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("loop")
    (work / "config").mkdir()
    cfg = {"device": "cpu", "plots": {"formats": ["png"], "dpi": 50}, "studies": {"loop": STUDY}}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = _run(work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work


def test_recommended_designs_are_trained_and_measured(loop_run):
    results = loop_run / "results" / "loop"
    designs = pd.read_parquet(results / "designs.parquet")
    rec = pd.read_parquet(results / "recommendations.parquet")
    assert list(rec["budget_bits"]) == [3000, 12000, 32768]
    assert (rec["design_memory_bits"] <= rec["budget_bits"]).all()
    summary = pd.read_parquet(results / "summary.parquet")
    assert set(summary["width"]) == {8, 16, 32, 64}  # the grid's tables hold the grid only
    for r in rec.itertuples():
        d = designs.set_index("budget_bits").loc[r.budget_bits]
        assert (r.design_width, r.design_bits) == (d.design_width, d.design_bits)
        cells = [
            pd.read_parquet(
                results / r.design_method / f"b{r.design_bits}" / f"w{r.design_width}-s{s}" / "metrics.parquet"
            )
            for s in STUDY["seeds"]
        ]
        measured = pd.concat(cells)
        assert r.measured_n_seeds == 2
        assert r.measured_test_error == pytest.approx(measured["test_error"].mean())
        assert r.inside == (r.predicted_lo <= r.measured_test_error <= r.predicted_hi)
        assert r.in_grid == (r.design_width in {8, 16, 32, 64})
        if not r.in_grid:  # a new width gets its own float networks
            assert (results / "float" / f"w{r.design_width}-s0" / "metrics.parquet").is_file()


def test_a_second_run_trains_nothing(loop_run):
    res = _run(loop_run, "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr


def test_a_bad_budget_is_one_line_before_any_job(tmp_path):
    (tmp_path / "config").mkdir()
    bad = {**STUDY, "recommend": {"budgets": ["12 parsecs"]}}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({"device": "cpu", "studies": {"loop": bad}}))
    res = _run(tmp_path, "-n")
    assert res.returncode != 0
    assert "studies.loop.recommend.budgets.0: budget '12 parsecs' is not a memory size" in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


def test_rule_file_is_included():
    assert 'include: "workflow/rules/recommend.smk"' in (REPO_ROOT / "Snakefile").read_text()
