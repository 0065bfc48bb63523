"""The Snakemake workflow end to end: dry-run job counts of the default config,
a tiny real run, caching, narrow reruns, error paths."""

import re
import struct

import pandas as pd
import pytest

from .conftest import REPO, tiny_study
from .report_checks import check_in_chromium, check_page_in_chromium, docutils_messages
from .snakemake_runs import job_counts, smk, write_config

pytestmark = pytest.mark.slow


def test_default_config_dry_run_job_counts(tmp_path):
    res = smk(tmp_path, "-n", "--configfile", str(REPO / "config" / "config.yaml"))
    assert res.returncode == 0, res.stderr
    counts = job_counts(res.stdout)
    # FCDNN 6 widths, CNN 5 widths, 3 seeds each; 6 bits values each
    assert counts == {
        "prepare_data": 1,
        "split_data": 1,  # the two digits studies share their split
        "train_float": 33,
        "retrain": 198,
        "aggregate": 2,
        "figures": 2,
        "scaling": 2,
        "report_answer": 2,
        "report_tables": 2,
        "report_provenance": 1,
        "all": 1,
    }


def readme_study_files(readme: str) -> set[str]:
    """The per-study files the README's "What you get" table names (one backticked
    path per row, {png,pdf} expanded; cell folders and export/ are not files)."""
    table = readme.split("## What you get")[1].split("\n\n")[2]
    files = set()
    for m in re.finditer(r"^\| `([^`]+)` \|", table, re.M):
        name = m[1]
        if name.endswith("/"):
            continue
        brace = re.search(r"\{([a-z,]+)\}", name)
        exts = brace[1].split(",") if brace else [None]
        files |= {name.replace(brace[0], e) if brace else name for e in exts}
    return files


def test_readme_job_count_and_files_match_a_dry_run(tmp_path):
    """The README's quick start names the default study's job count and its
    "What you get" table every file a study gets: both as a dry run sees them."""
    readme = (REPO / "README.md").read_text()
    claimed = int(re.search(r"3 seeds; (\d+)\s+jobs", readme)[1])
    res = smk(tmp_path, "-n", "--quiet", "host", "--configfile", str(REPO / "config" / "config.yaml"))
    assert res.returncode == 0, res.stderr
    assert claimed == sum(job_counts(res.stdout).values()), "README's job count"
    assert f"N of {claimed} steps" in readme
    outputs = {f for line in re.findall(r"^\s+output: (.*)$", res.stdout, re.M) for f in line.split(", ")}
    for study in ("digits-fcdnn", "digits-cnn"):
        prefix = f"results/{study}/"
        cell_dirs = ("float/", *(f"{m}/" for m in ("fixed", "epoch", "learned")))
        made = {f[len(prefix) :] for f in outputs if f.startswith(prefix)}
        made = {f for f in made if not f.startswith(cell_dirs)}
        assert made == readme_study_files(readme), study


def test_studies_with_the_same_split_share_one_splits_file(tmp_path):
    # --quiet host: the job blocks (with their outputs) that the default profile's quiet: [rules] hides
    res = smk(tmp_path, "-n", "--quiet", "host", "--configfile", str(REPO / "config" / "paper.yaml"))
    assert res.returncode == 0, res.stderr
    # the three MNIST depths share one split, CIFAR-10 has its own
    assert job_counts(res.stdout)["split_data"] == 2
    assert sorted(set(re.findall(r"output: (results/data/splits/\S+\.pt)", res.stdout))) == [
        "results/data/splits/cifar10-val0.1-seed0-all.pt",
        "results/data/splits/mnist-val0.1-seed0-all.pt",
    ]


def test_methods_share_the_float_networks(tmp_path):
    study = tiny_study(seeds=[0, 1])
    study["retraining"]["methods"] = ["fixed", "epoch"]
    cfg = write_config(tmp_path / "m.yaml", {"s": study})
    counts = job_counts(smk(tmp_path, "-n", "--configfile", str(cfg)).stdout)
    assert counts["train_float"] == 2 * 2  # widths x seeds: each float network once
    assert counts["retrain"] == 2 * 2 * 2 * 2  # widths x bits x seeds x methods


def test_bad_config_fails_before_any_job(tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", {"s": tiny_study(training={"epoch": 2})})
    res = smk(tmp_path, "--cores", "1", "--configfile", str(cfg))
    assert res.returncode != 0
    assert "config: unknown key 'studies.s.training.epoch' (did you mean 'epochs'?)" in res.stderr + res.stdout
    assert not (tmp_path / "results").exists()


def test_missing_dataset_fails_with_one_line_and_no_outputs(tmp_path):
    study = tiny_study(dataset="mnist")
    cfg = write_config(tmp_path / "c.yaml", {"m": study}, data_dir=str(tmp_path / "nodata"), download=False)
    res = smk(tmp_path, "--cores", "1", "--configfile", str(cfg))
    assert res.returncode != 0
    log = (tmp_path / "results" / "logs" / "prepare_data" / "mnist.log").read_text()
    assert log.startswith(f"qdesign: error: dataset 'mnist' not found at {tmp_path / 'nodata' / 'MNIST' / 'raw'}")
    assert len(log.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "data" / "mnist.pt").exists()
    assert not (tmp_path / "results" / "m").exists()  # no training started


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run: a digits FCDNN (2 widths x float, 2, 4 bits) and a tiny CNN."""
    work = tmp_path_factory.mktemp("run")
    studies = {
        "fc": tiny_study(),
        "conv": tiny_study(model={"type": "cnn", "widths": [2, 4]}, bits=[2]),
    }
    cfg = write_config(work / "tiny.yaml", studies, plots={"formats": ["png"]})
    res = smk(work, "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (work / "console.txt").write_text(res.stdout + res.stderr)
    return work, cfg, studies


def test_console_progress_without_kilobyte_lines_and_a_summary(tiny_run):
    """The default profile keeps Snakemake's progress but not the job blocks
    (the default target's lists every file), and the run ends with what it
    found per study."""
    work, _, _ = tiny_run
    text = (work / "console.txt").read_text()
    lines = text.splitlines()
    assert max(map(len, lines)) < 500, max(lines, key=len)[:200]
    assert re.search(r"^\d+ of \d+ steps \(100%\) done$", text, re.M)
    for study, n in (("fc", 6), ("conv", 4)):
        assert re.search(rf"^qdesign: {study}: {n} trained networks .* chosen on validation", text, re.M), study
        assert f"results/{study}/report/answer.html" in text
    assert "qdesign: every figure and page in one file: snakemake --report report.html" in text


def test_tiny_run_tables(tiny_run):
    work, _, _ = tiny_run
    fc = work / "results" / "fc"
    summary = pd.read_parquet(fc / "summary.parquet")
    ecr = pd.read_parquet(fc / "ecr.parquet")
    frontier = pd.read_parquet(fc / "frontier.parquet")
    assert len(summary) == 2 * 3 and sorted(summary["bits"].unique()) == [2, 4, 32]
    assert summary["test_error"].between(0, 1).all() and (summary["test_error"] < 0.7).all()
    q = summary[summary.bits < 32]
    assert (
        q["direct_test_error"].between(0, 1).all() and summary.loc[summary.bits == 32, "direct_test_error"].isna().all()
    )
    assert (q["memory_bits_weights"] == q["n_weights"] * q["bits"]).all()
    assert len(ecr) == 6 and (ecr["ecr"] > 0).all() and (ecr.loc[ecr.bits == 32, "ecr"] == 1).all()
    assert set(frontier["kind"]) == {"pareto", "budget"}
    conv = pd.read_parquet(work / "results" / "conv" / "summary.parquet")
    assert set(conv["model"]) == {"cnn"} and len(conv) == 4


def test_tiny_run_figures(tiny_run):
    work, _, _ = tiny_run
    for study in ("fc", "conv"):
        for name in ("error_vs_weights", "error_vs_memory", "ecr_vs_width", "retrain_gap"):
            png = work / "results" / study / "figures" / f"{name}.png"
            data = png.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = struct.unpack(">II", data[16:24])
            assert width > 500 and height > 300


def test_report_builds_without_docutils_messages_and_renders(tiny_run, tmp_path):
    """`snakemake --report` of a finished run: no docutils warning or system
    message in its output or the file, every study's answer and tables page in
    it, and it renders in headless Chromium (its menu lists every study)."""
    work, cfg, _ = tiny_run
    report = tmp_path / "report.html"
    res = smk(work, "--report", str(report), "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    assert not docutils_messages(res.stdout + res.stderr, report)
    html = report.read_text()
    for study in ("fc", "conv"):
        for page in ("answer", "tables"):
            assert f"results/{study}/report/{page}.html" in html
    answer = work / "results" / "fc" / "report" / "answer.html"
    text = answer.read_text()
    # two widths: no law, but the trained answer per budget, chosen on validation and reported on test
    assert "Trained: the best measured design within each budget" in text and "no law" in text
    check_in_chromium(report, tmp_path, ["fc", "conv", "provenance"])
    check_page_in_chromium(answer, tmp_path, ["The best design per memory budget", "validation"])


def test_warm_worker_served_the_training_jobs(tiny_run):
    work, _, _ = tiny_run
    log = (work / "results" / "logs" / "worker.log").read_text()
    # 1 split (shared) + 4 float + 6 retrain jobs of the two studies went through the worker, and
    # the tables, figures and pages: 2 x (aggregate, scaling, figures, report_tables) + report_provenance
    assert re.search(r"served 20 jobs", log), log


def test_second_run_does_nothing(tiny_run):
    work, cfg, _ = tiny_run
    res = smk(work, "-n", "--configfile", str(cfg))
    assert "Nothing to be done" in res.stdout + res.stderr


def test_adding_bits_trains_no_float_model(tiny_run):
    work, _, studies = tiny_run
    edited = {**studies, "fc": {**studies["fc"], "bits": [2, 3, 4]}}
    cfg = write_config(work / "more-bits.yaml", edited, plots={"formats": ["png"]})
    counts = job_counts(smk(work, "-n", "--configfile", str(cfg)).stdout)
    assert counts == {
        "retrain": 2,
        "aggregate": 1,
        "scaling": 1,
        "figures": 1,
        "report_answer": 1,
        "report_tables": 1,
        "report_provenance": 1,
        "all": 1,
    }


def test_a_lost_cell_is_rebuilt(tiny_run):
    """Deleting a finished cell's folder makes the default target rebuild it
    (and what depends on it), not 'Nothing to be done'."""
    import shutil  # noqa: PLC0415

    work, cfg, _ = tiny_run
    cell = next((work / "results" / "fc" / "fixed").glob("b*/w*"))
    backup = work / "lost-cell"
    shutil.copytree(cell, backup)
    shutil.rmtree(cell)
    try:
        counts = job_counts(smk(work, "-n", "--configfile", str(cfg)).stdout)
        assert counts["retrain"] == 1 and "train_float" not in counts
    finally:
        shutil.copytree(backup, cell)


def test_plot_options_rerun_figures_only(tiny_run):
    work, _, studies = tiny_run
    cfg = write_config(work / "dpi.yaml", studies, plots={"formats": ["png"], "dpi": 90})
    counts = job_counts(smk(work, "-n", "--configfile", str(cfg)).stdout)
    # the provenance page records the whole config, plot options included
    assert counts == {"figures": 2, "report_provenance": 1, "all": 1}


def test_same_numbers_without_the_worker(tiny_run, tmp_path):
    """Determinism across processes: jobs run in their own processes reproduce
    the numbers of the jobs forked from the warm worker."""
    work, _, studies = tiny_run
    cfg = write_config(tmp_path / "tiny.yaml", {"fc": studies["fc"]}, plots={"formats": ["png"]})
    res = smk(tmp_path, "--cores", "2", "--configfile", str(cfg), env={"QDESIGN_WORKER": "0"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (tmp_path / "results" / "logs" / "worker.log").exists()
    cols = ["width", "bits", "seed", "test_error", "val_error", "direct_test_error", "config_hash"]
    a = pd.read_parquet(work / "results" / "fc" / "summary.parquet")[cols]
    b = pd.read_parquet(tmp_path / "results" / "fc" / "summary.parquet")[cols]
    pd.testing.assert_frame_equal(a, b)
