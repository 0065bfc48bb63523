"""The tiny study on a real Slurm cluster through the official executor plugin.

Runs when a cluster answers (`sinfo`); CI brings one up with .ci/slurm-up.sh
and sets QDESIGN_REQUIRE_SLURM=1 so that a missing cluster fails instead of
skipping. Every Snakemake call has a hard timeout: the plugin can wait forever
when sacct misbehaves.
"""

import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from .conftest import REPO, tiny_study

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
ACCOUNT = os.environ.get("QDESIGN_SLURM_ACCOUNT", "ci")
PARTITION = os.environ.get("QDESIGN_SLURM_PARTITION", "debug")
COMPARED = ["width", "bits", "seed", "n_weights", "test_error", "val_error", "direct_test_error", "config_hash"]


def cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    return res.returncode == 0 and any(s in res.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="module")
def cluster():
    if not cluster_up():
        if os.environ.get("QDESIGN_REQUIRE_SLURM") == "1":
            pytest.fail("QDESIGN_REQUIRE_SLURM=1 but no Slurm cluster answers (run .ci/slurm-up.sh)")
        pytest.skip("no Slurm cluster (bring one up with .ci/slurm-up.sh)")


def snakemake(workdir, config, *args, timeout):
    cmd = ["timeout", "-k", "30", str(timeout), sys.executable, "-m", "snakemake",
           "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def on_slurm(workdir, config, *args, timeout=400):
    return snakemake(workdir, config, "--workflow-profile", str(REPO / "profiles" / "slurm"),
                     "--default-resources", f"slurm_account={ACCOUNT}", f"slurm_partition={PARTITION}",
                     "mem_mb=1000", "runtime=10",
                     "--slurm-init-seconds-before-status-checks", "2", "--retries", "0", *args, timeout=timeout)


def sacct_jobs(since: str) -> pd.DataFrame:
    res = subprocess.run(["sacct", "-n", "-P", "-X", "-S", since, "-o", "JobID,State,Account,Partition,Comment%200"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    rows = [line.split("|", 4) for line in res.stdout.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=["job", "state", "account", "partition", "comment"])


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The same tiny config run locally and on Slurm."""
    base = tmp_path_factory.mktemp("slurm")
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump({"device": "cpu", "plots": {"formats": ["png"]},
                                      "studies": {"s": tiny_study(bits=[2])}}))
    local, remote = base / "local", base / "remote"
    res = snakemake(local, config, "--cores", "2", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))
    res = on_slurm(remote, config)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    return dict(local=local, remote=remote, config=config, since=since, log=res.stderr + res.stdout)


def test_slurm_outputs_equal_local_outputs(runs):
    for table in ("summary", "ecr", "frontier"):
        a = pd.read_parquet(runs["local"] / "results" / "s" / f"{table}.parquet")
        b = pd.read_parquet(runs["remote"] / "results" / "s" / f"{table}.parquet")
        cols = [c for c in a.columns if c in COMPARED] if table == "summary" else list(a.columns)
        pd.testing.assert_frame_equal(a[cols], b[cols])
    assert (runs["remote"] / "results" / "s" / "figures" / "ecr_vs_width.png").stat().st_size > 10_000


def test_training_jobs_ran_as_slurm_jobs_and_appear_in_sacct(runs):
    jobs = pd.DataFrame()
    for _ in range(30):  # accounting can lag a few seconds behind
        jobs = sacct_jobs(runs["since"])
        jobs = jobs[jobs["comment"].str.startswith("rule_")]
        if len(jobs) >= 4:
            break
        time.sleep(1)
    rules = jobs["comment"].str.extract(r"^rule_(train_float|retrain|prepare_data|aggregate|figures)")[0]
    # 2 widths: 2 float + 2 retrain jobs went through sbatch; data, tables and figures are local rules
    assert sorted(rules.value_counts().items()) == [("retrain", 2), ("train_float", 2)]
    assert set(jobs["state"]) == {"COMPLETED"}
    assert set(jobs["account"]) == {ACCOUNT} and set(jobs["partition"]) == {PARTITION}


def test_failing_job_is_reported_as_failed(runs):
    work = runs["remote"]
    (work / "results" / "s" / "float" / "w8-s0" / "model.pt").write_bytes(b"corrupt")
    res = on_slurm(work, runs["config"], "--forcerun", "retrain", "--keep-going", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "SLURM-job" in out and "failed" in out and "FAILED" in out
    log = (work / "results" / "logs" / "retrain" / "s" / "b2" / "w8-s0.log").read_text()
    assert "qdesign: error: corrupt checkpoint" in log
    # the failed cell left no output a later run would trust
    assert not (work / "results" / "s" / "b2" / "w8-s0" / "metrics.parquet").exists()


def test_grouped_cells_run_in_one_slurm_job(cluster, tmp_path):
    """Job grouping as documented in profiles/slurm: the retrain cells of a
    study run in one cluster job, capped at 2 CPUs (the rest in series)."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"device": "cpu", "plots": {"formats": ["png"]},
                                      "studies": {"s": tiny_study(bits=[2, 4])}}))
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))
    res = on_slurm(tmp_path / "work", config, "--groups", "retrain=cells", "--group-components", "cells=4",
                   "--cores", "2")
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert len(pd.read_parquet(tmp_path / "work" / "results" / "s" / "summary.parquet")) == 6
    jobs = pd.DataFrame()
    for _ in range(30):
        jobs = sacct_jobs(since)
        if len(jobs[jobs["comment"].str.startswith("rule_")]) >= 3:
            break
        time.sleep(1)
    kinds = jobs["comment"].str.replace(r"_wildcards.*", "", regex=True).value_counts().to_dict()
    # 2 float jobs, and all 4 retrain cells in a single group job
    assert kinds == {"rule_train_float": 2, "rule_cells_retrain": 1}
