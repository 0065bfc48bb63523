"""The adaptive search end to end on digits: rounds as checkpoints whose cells
are ordinary cached cells; a rerun trains nothing, a full study of the same grid
reuses every searched cell, and kill -9 in the middle of a search followed by a
rerun resumes it without retraining a finished cell, to the same rounds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from qdesign.core.layout import REPO_ROOT
from qdesign.run.invocation import snakemake_command

from .snakemake_runs import DIGITS_GRID

pytestmark = pytest.mark.slow

STUDY = {**DIGITS_GRID, "search": {"budgets": [3000, 12000, "4KiB"]}}
GRID_CELLS = 4 * 3 * 2  # widths x (2 bits + float) x seeds


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    env.pop("QDESIGN_RUN_OWNER", None)  # this run's Snakemake is the owner of its jobs
    return env


def _run(workdir, *args):
    cmd = snakemake_command(workdir, "--cores", 2, *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_env())


def _workdir(base: Path, study: dict) -> Path:
    (base / "config").mkdir(parents=True)
    cfg = {"device": "cpu", "plots": {"formats": ["png"], "dpi": 50}, "studies": {"srch": study}}
    (base / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return base


def _rounds(work: Path) -> list[dict]:
    folder = work / "results" / "srch" / "search"
    n = len(list(folder.glob("round-*.json")))
    return [json.loads((folder / f"round-{r}.json").read_text()) for r in range(n)]


def _plans(work: Path) -> list:
    """What each round chose (its measured seconds aside, which differ between runs)."""
    return [(r["cells"], r["batch"], r["answers"], r["stop"]) for r in _rounds(work)]


def _metrics(work: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (work / "results" / "srch").rglob("metrics.parquet")}


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    work = _workdir(tmp_path_factory.mktemp("search"), STUDY)
    res = _run(work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (work / "console.txt").write_text(res.stdout + res.stderr)
    return work


def test_the_search_trains_part_of_the_grid_and_records_its_rounds(search_run):
    results = search_run / "results" / "srch"
    rounds = _rounds(search_run)
    assert rounds[-1]["stop"] is not None and all(r["stop"] is None for r in rounds[:-1])
    asked = {tuple(c) for r in rounds for c in r["batch"]}
    trained = _metrics(search_run)
    assert len(trained) == len(asked) < GRID_CELLS  # only what the rounds asked for, as ordinary cells
    for w, b, s in asked:
        folder = results / ("float" if b == 32 else f"fixed/b{b}") / f"w{w}-s{s}"
        assert (folder / "metrics.parquet").is_file() and (folder / "model.pt").is_file()
    table = pd.read_parquet(results / "search.parquet")
    assert list(table.columns[:4]) == ["study", "round", "cells", "seconds"]
    last = table[table["round"] == len(rounds) - 1]
    assert sorted(last["budget_bits"]) == [3000, 12000, 32768]
    assert (last["memory_bits"] <= last["budget_bits"]).all() and (last["stop"] == rounds[-1]["stop"]).all()
    assert int(last["cells"].iloc[0]) == len(asked)
    cells = pd.concat(pd.read_parquet(p) for p in trained)
    assert last["seconds"].iloc[0] == pytest.approx(cells["train_seconds"].sum())
    for a in last.itertuples():  # the search's memory model is the cells' own
        cell = cells[(cells["width"] == a.width) & (cells["bits"] == a.bits)]
        assert len(cell) == a.n_seeds and (cell["memory_bits_weights"] == a.memory_bits).all()
    assert (results / "figures" / "search_progress.png").is_file()
    page = (results / "report" / "search.html").read_text()
    assert "Best design per budget when the search stopped" in page and rounds[-1]["stop"] in page
    assert not (results / "summary.parquet").exists()  # a search study does not build the grid's tables
    console = (search_run / "console.txt").read_text()
    line = next(x for x in console.splitlines() if x.startswith("qdesign: srch: search stopped after"))
    assert f"{len(rounds) - 1} rounds ({rounds[-1]['stop']}), {len(asked)} cells" in line


def test_a_second_run_trains_nothing(search_run):
    res = _run(search_run, "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr


def test_a_full_study_of_the_same_grid_reuses_every_searched_cell(search_run):
    full = {k: v for k, v in STUDY.items() if k != "search"}
    cfg = yaml.safe_load((search_run / "config" / "config.yaml").read_text())
    cfg["studies"]["srch"] = full
    other = search_run / "config" / "full.yaml"
    other.write_text(yaml.safe_dump(cfg))
    res = _run(search_run, "--configfile", other, "-n", "--quiet", "host")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = res.stdout + res.stderr
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("train_float", "retrain") and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert sum(counts.values()) == GRID_CELLS - len(_metrics(search_run)), text[-2000:]


def test_kill_9_mid_search_then_a_rerun_resumes_without_retraining(search_run, tmp_path):
    work = _workdir(tmp_path / "killed", STUDY)
    proc = subprocess.Popen(
        snakemake_command(work, "--cores", 2),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        start_new_session=True,
    )
    round1 = work / "results" / "srch" / "search" / "round-1.json"
    try:
        deadline = time.monotonic() + 600
        while not round1.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert round1.exists() and proc.poll() is None, "the search ended before round 1 could be interrupted"
        proc.kill()  # kill -9 of Snakemake in the middle of the search
        proc.wait()
        time.sleep(1.0)  # its local jobs end by themselves (qdesign.run.lifeline)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of this run still alive
        except ProcessLookupError:
            pass
    assert not (work / "results" / "srch" / "search.parquet").exists()
    finished = _metrics(work)
    assert finished, "no cell had finished"
    _run(work, "--unlock")
    res = _run(work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    after = _metrics(work)
    assert len(after) > len(finished)  # the kill left cells to train
    assert {p: after[p] for p in finished} == finished  # no finished cell was trained again
    assert _plans(work) == _plans(search_run)  # the same search as one uninterrupted run


def test_rule_file_is_included():
    assert 'include: "workflow/rules/search.smk"' in (REPO_ROOT / "Snakefile").read_text()


def test_a_finished_search_ships_its_table_and_cells_as_a_reference(search_run, tmp_path):
    import shutil  # noqa: PLC0415

    from qdesign.core.errors import TableError  # noqa: PLC0415
    from qdesign.core.registry import SEARCH_CELLS_TABLE
    from qdesign.run.reference import export_reference  # noqa: PLC0415

    config, results = search_run / "config" / "config.yaml", search_run / "results"
    export_reference(config, results, tmp_path / "ref", wall_seconds=1.0)
    shipped = pd.read_parquet(tmp_path / "ref" / "srch" / f"{SEARCH_CELLS_TABLE}.parquet")
    trained = _metrics(search_run)
    assert len(shipped) == len(trained) and not (tmp_path / "ref" / "srch" / "summary.parquet").exists()
    assert pd.read_parquet(tmp_path / "ref" / "srch" / "search.parquet").equals(
        pd.read_parquet(results / "srch" / "search.parquet")
    )
    provenance = json.loads((tmp_path / "ref" / "provenance.json").read_text())
    assert provenance["studies"]["srch"]["cells"] == len(trained)
    # a search that has not stopped (its last round lost) is refused in one line
    partial = tmp_path / "partial"
    shutil.copytree(results, partial)
    rounds = sorted((partial / "srch" / "search").glob("round-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    assert len(rounds) >= 2
    rounds[-1].unlink()
    with pytest.raises(TableError, match="has not stopped"):
        export_reference(config, partial, tmp_path / "ref2")
    # a config edited after the search ran, and the search not rerun: refused, nothing written
    for edit, what in (
        (lambda st: st["search"].update(budgets=[3000, 12000]), "other search settings"),
        (lambda st: st.update(retraining={**st.get("retraining", {}), "lr": 0.123}), "trained under other settings"),
    ):
        cfg = yaml.safe_load(config.read_text())
        edit(cfg["studies"]["srch"])
        edited = tmp_path / f"edited-{len(what)}.yaml"
        edited.write_text(yaml.safe_dump(cfg))
        with pytest.raises(TableError, match=what):
            export_reference(edited, results, tmp_path / "ref3")
        assert not (tmp_path / "ref3").exists()
