"""The tiny test study (.test/config/config.yaml) end to end, pinned bit for bit.

tests/golden/test_study.json holds the exact values (hex floats) its tables had
when it was made; refactors must reproduce them exactly. Regenerate only for a
deliberate change of numbers, and say why in the commit:

    snakemake --cores 2 --directory .test
    python tests/golden/regenerate.py .test/results tests/golden/test_study.json
"""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow
GOLDEN = json.loads((REPO / "tests" / "golden" / "test_study.json").read_text())


@pytest.fixture(scope="module")
def test_study(tmp_path_factory):
    work = tmp_path_factory.mktemp("dottest")
    shutil.copytree(REPO / ".test" / "config", work / "config")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work / "results"


@pytest.mark.parametrize("study", sorted(GOLDEN))
def test_tables_reproduce_bit_for_bit(test_study, study):
    s = pd.read_parquet(test_study / study / "summary.parquet")
    want = GOLDEN[study]["summary"]
    assert len(s) == len(want)
    for row, gold in zip(s.to_dict("records"), want):
        for key, value in gold.items():
            got = row[key]
            if key == "steps":
                assert [float(x).hex() for x in got] == value, (study, row["width"], row["bits"], row["seed"], key)
            elif isinstance(value, str):
                assert float(got).hex() == value, (study, row["width"], row["bits"], row["seed"], key)
            else:
                assert int(got) == value, (study, row["width"], row["bits"], row["seed"], key)
    ecr = pd.read_parquet(test_study / study / "ecr.parquet")
    assert [float(x).hex() for x in ecr["ecr"]] == GOLDEN[study]["ecr"]


def test_every_figure_is_drawn(test_study):
    for study in GOLDEN:
        figs = sorted(p.stem for p in (test_study / study / "figures").glob("*.png"))
        assert figs, study


def test_report_holds_every_figure_table_and_provenance(test_study):
    """`snakemake --report` after the run: one HTML file with every figure of
    every study, its caption, the tables page and the provenance page."""
    from qdesign.registry import FIGURES  # noqa: PLC0415

    work = test_study.parent
    out = work / "report.html"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--report",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    for study in GOLDEN:
        assert study in text
    for name in FIGURES:
        assert f"{name}.png" in text, name
        caption = (REPO / "workflow" / "report" / f"{name}.rst").read_text().split()[:4]
        assert " ".join(caption) in text, name
    assert "tables.html" in text and "provenance.html" in text
