"""The tiny test study (.test/config/config.yaml) end to end, pinned bit for bit.

tests/golden/test_study.json holds the exact values (hex floats) its tables had
when they were made, per numeric platform (`qdesign.nn.numerics.numeric_platform`:
torch, NumPy, the instruction set the kernels are picked by); refactors must
reproduce them exactly. The last float32 bit of a trained network depends on
the CPU's kernels, so:

* the tables equal a recorded platform's tables exactly: pass;
* this platform has a recorded entry and the tables differ: fail (a change of
  numbers);
* this platform has no entry: the tables must agree with a recorded one within
  what kernel rounding can do (same integers, errors within 2 points, steps
  within 0.1%), and a warning asks for this platform's entry.

Regenerate only for a deliberate change of numbers or a new platform, and say
why in the commit:

    snakemake --cores 2 --directory .test
    python tests/golden/regenerate.py .test/results tests/golden/test_study.json
"""

import importlib.util
import json
import math
import shutil
import subprocess
import warnings

import pytest

from qdesign.nn.numerics import numeric_platform
from qdesign.run.invocation import snakemake_command

from .conftest import REPO

pytestmark = pytest.mark.slow
GOLDEN = json.loads((REPO / "tests" / "golden" / "test_study.json").read_text())["platforms"]
STUDIES = sorted({study for e in GOLDEN for study in e["tables"]})
ERROR_KEYS = ("test_error", "val_error", "direct_test_error", "direct_val_error")
ERROR_TOL = 0.02  # error fraction, for a platform without its own entry
STEP_RTOL = 1e-3


def _entries(study: str) -> list[dict]:
    """The platform entries that record ``study``: an entry may lack a study whose numbers
    changed on purpose after it was recorded (test-cnn since quantized CNNs went
    channels-last, issue 28); there the study counts as unrecorded."""
    return [e for e in GOLDEN if study in e["tables"]]


@pytest.fixture(scope="module")
def test_study(tmp_path_factory):
    work = tmp_path_factory.mktemp("dottest")
    shutil.copytree(REPO / ".test" / "config", work / "config")
    res = subprocess.run(
        snakemake_command(work, "--cores", 2),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work / "results"


def _encoder():
    """tests/golden/regenerate.py's encode_tables: the one encoding of a run's tables."""
    spec = importlib.util.spec_from_file_location("golden_regenerate", REPO / "tests" / "golden" / "regenerate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.encode_tables


def _first_difference(got: dict, want: dict) -> str | None:
    if len(got["summary"]) != len(want["summary"]):
        return f"{len(got['summary'])} rows, golden {len(want['summary'])}"
    for row, gold in zip(got["summary"], want["summary"]):
        for key, value in gold.items():
            if row[key] != value:
                return f"w{row['width']} b{row['bits']} s{row['seed']} {key}: {row[key]} != {value}"
    if got["ecr"] != want["ecr"]:
        return f"ecr {got['ecr']} != {want['ecr']}"
    return None


def _outside_tolerance(got: dict, want: dict) -> str | None:
    """What kernel rounding cannot explain (None: within tolerance)."""
    if len(got["summary"]) != len(want["summary"]) or len(got["ecr"]) != len(want["ecr"]):
        return "a different number of rows"
    for row, gold in zip(got["summary"], want["summary"]):
        where = f"w{row['width']} b{row['bits']} s{row['seed']}"
        for key, value in gold.items():
            if key == "steps":
                a, b = [float.fromhex(x) for x in row[key]], [float.fromhex(x) for x in value]
                if len(a) != len(b) or any(abs(x - y) > STEP_RTOL * abs(y) for x, y in zip(a, b)):
                    return f"{where} steps {a} vs {b}"
            elif key in ERROR_KEYS:
                a, b = float.fromhex(row[key]), float.fromhex(value)
                if math.isnan(a) != math.isnan(b) or abs(a - b) > ERROR_TOL:
                    return f"{where} {key} {a:.4f} vs {b:.4f}"
            elif key != "best_epoch" and row[key] != value:
                return f"{where} {key} {row[key]} != {value}"
    return None


@pytest.mark.parametrize("study", STUDIES)
def test_tables_reproduce_bit_for_bit(test_study, study):
    got = _encoder()(test_study, study)
    entries = _entries(study)
    if any(_first_difference(got, e["tables"][study]) is None for e in entries):
        return
    here = numeric_platform()
    mine = [e for e in entries if e["platform"] == here]
    if mine:
        pytest.fail(f"{study} changed on a recorded platform: {_first_difference(got, mine[0]['tables'][study])}")
    far = [_outside_tolerance(got, e["tables"][study]) for e in entries]
    assert any(d is None for d in far), f"{study} on an unrecorded platform, beyond kernel rounding: {far}"
    warnings.warn(
        f"{study}: no golden tables for this numeric platform {here}; they agree with a recorded one within "
        "kernel rounding. Record them: python tests/golden/regenerate.py .test/results tests/golden/test_study.json",
        stacklevel=1,
    )


def test_golden_tolerance_check_can_fail():
    """The unrecorded-platform path is a real check: a 3-point error change or a
    1% step change is beyond it, a last-bit step change is not."""
    want = _entries(STUDIES[0])[0]["tables"][STUDIES[0]]
    quant = next(i for i, r in enumerate(want["summary"]) if r["steps"])
    assert _outside_tolerance(want, want) is None and _first_difference(want, want) is None

    def changed(key, fn):
        rows = [dict(r) for r in want["summary"]]
        rows[quant][key] = fn(rows[quant][key])
        return {"summary": rows, "ecr": want["ecr"]}

    ulp = changed("steps", lambda v: [math.nextafter(float.fromhex(x), math.inf).hex() for x in v])
    assert _first_difference(ulp, want) is not None and _outside_tolerance(ulp, want) is None
    assert _outside_tolerance(changed("steps", lambda v: [(1.01 * float.fromhex(x)).hex() for x in v]), want)
    assert _outside_tolerance(changed("test_error", lambda v: (float.fromhex(v) + 0.03).hex()), want)
    assert _outside_tolerance(changed("n_weights", lambda v: v + 1), want)


def test_every_figure_is_drawn(test_study):
    for study in STUDIES:
        figs = sorted(p.stem for p in (test_study / study / "figures").glob("*.png"))
        assert figs, study


def test_report_holds_every_figure_table_and_provenance(test_study):
    """`snakemake --report` after the run: one HTML file with every figure of
    every study, its caption, the tables page and the provenance page."""
    from qdesign.core.registry import FIGURES  # noqa: PLC0415

    work = test_study.parent
    out = work / "report.html"
    res = subprocess.run(
        snakemake_command(work, "--report", out),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    for study in STUDIES:
        assert study in text
    for name in FIGURES:
        assert f"{name}.png" in text, name
        caption = (REPO / "workflow" / "report" / f"{name}.rst").read_text().split()[:4]
        assert " ".join(caption) in text, name
    assert "tables.html" in text and "provenance.html" in text
