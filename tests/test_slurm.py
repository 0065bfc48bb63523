"""The tiny study on a real Slurm cluster through the official executor plugin.

Runs when a cluster answers (`sinfo`); CI brings one up with .ci/slurm-up.sh
and sets QDESIGN_REQUIRE_SLURM=1 so that a missing cluster fails instead of
skipping. Every Snakemake call has a hard timeout. Jobs are found by the job
ids Snakemake reports, not by their sacct comment (which needs the cluster's
AccountingStoreFlags=job_comment).
"""

import os
import re
import shutil
import subprocess
import time

import pandas as pd
import pytest
import yaml

from qdesign.run.invocation import snakemake_command
from qdesign.run.resources import MIN_RUNTIME_MIN

from .conftest import REPO, tiny_study

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
ACCOUNT = os.environ.get("QDESIGN_SLURM_ACCOUNT", "ci")
PARTITION = os.environ.get("QDESIGN_SLURM_PARTITION", "debug")
COMPARED = ["width", "bits", "seed", "n_weights", "test_error", "val_error", "direct_test_error", "config_hash"]
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(rule_\w+|group_\w+)/")
ARRAY = re.compile(
    r"Submitted array job with Snakemake IDs \S+ and SLURM job ID (\d+)\. "
    r"The individual task IDs are (\d+)-(\d+)"
)


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


def snakemake_cmd(workdir, config, *args, timeout):
    return [
        "timeout",
        "-k",
        "30",
        str(timeout),
        *snakemake_command(workdir, "--configfile", config, *args),
    ]


def snakemake(workdir, config, *args, timeout):
    return subprocess.run(snakemake_cmd(workdir, config, *args, timeout=timeout), capture_output=True, text=True)


SLURM_ARGS = [
    "--workflow-profile",
    str(REPO / "profiles" / "slurm"),
    "--default-resources",
    f"slurm_account={ACCOUNT}",
    f"slurm_partition={PARTITION}",
    "mem_mb=1000",
    "runtime=10",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--retries",
    "0",
]


def on_slurm(workdir, config, *args, timeout=300):
    return snakemake(workdir, config, *SLURM_ARGS, *args, timeout=timeout)


def submitted(log: str) -> dict[str, str]:
    """SLURM job id (array tasks as <id>_<task>) -> the rule or group it runs, from Snakemake's log."""
    jobs = {job: kind for job, kind in SUBMITTED.findall(log)}
    for job, first, last in ARRAY.findall(log):
        jobs.update({f"{job}_{i}": "rule_array" for i in range(int(first), int(last) + 1)})
    return jobs


def _mb(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)([KMGT]?)[nc]?", text.strip())
    assert m, text
    return float(m.group(1)) * {"": 1 / 2**20, "K": 1 / 1024, "M": 1, "G": 1024, "T": 2**20}[m.group(2)]


def _minutes(text: str) -> float:
    days, _, hms = text.rpartition("-")
    parts = [float(p) for p in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return (float(days or 0) * 24 + parts[0]) * 60 + parts[1] + parts[2] / 60


def sacct(job_ids) -> pd.DataFrame:
    """One row per job (array task): name, state, account, partition, elapsed and
    time limit in minutes, requested memory and peak memory in MB (the sum of
    the MaxRSS of its steps: the batch script's and the srun step's, which run
    at the same time)."""
    fields = "JobID,JobName,State,Account,Partition,Elapsed,Timelimit,ReqMem,MaxRSS"
    parents = sorted({j.split("_")[0] for j in job_ids})
    for _ in range(30):  # accounting lags a few seconds behind
        res = subprocess.run(
            ["sacct", "-n", "-P", "-j", ",".join(parents), "-o", fields], capture_output=True, text=True, timeout=30
        )
        assert res.returncode == 0, res.stderr
        rows = pd.DataFrame(
            [line.split("|") for line in res.stdout.splitlines() if line.strip()], columns=fields.split(",")
        )
        rows["job"] = rows["JobID"].str.split(".").str[0]
        jobs = rows[rows["JobID"] == rows["job"]]
        steps = rows[(rows["JobID"] != rows["job"]) & (rows["MaxRSS"] != "")]
        if set(job_ids) <= set(jobs["JobID"]) and set(job_ids) <= set(steps["job"]):
            break
        time.sleep(1)
    jobs = jobs.set_index("JobID").loc[list(job_ids)].copy()
    peak = steps.assign(mb=steps["MaxRSS"].map(_mb)).groupby("job")["mb"].sum()
    jobs["peak_mb"] = [float(peak.get(j, 0.0)) for j in jobs.index]
    jobs["req_mb"] = jobs["ReqMem"].map(_mb)
    jobs["elapsed_min"] = jobs["Elapsed"].map(_minutes)
    jobs["limit_min"] = jobs["Timelimit"].map(_minutes)
    return jobs


def tiny_config(path, **study):
    path.write_text(
        yaml.safe_dump({"device": "cpu", "plots": {"formats": ["png"]}, "studies": {"s": tiny_study(**study)}})
    )
    return path


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The same tiny config run locally and on Slurm, the retrain cells as array jobs."""
    base = tmp_path_factory.mktemp("slurm")
    config = tiny_config(base / "tiny.yaml", bits=[2, 4])
    local, remote = base / "local", base / "remote"
    res = snakemake(local, config, "--cores", "2", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    res = on_slurm(remote, config, "--slurm-array-jobs", "retrain")
    log = res.stderr + res.stdout
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    return dict(local=local, remote=remote, config=config, log=log, run_id=run_id, jobs=submitted(log))


def test_slurm_outputs_equal_local_outputs(runs):
    for table in ("summary", "ecr", "frontier"):
        a = pd.read_parquet(runs["local"] / "results" / "s" / f"{table}.parquet")
        b = pd.read_parquet(runs["remote"] / "results" / "s" / f"{table}.parquet")
        cols = [c for c in a.columns if c in COMPARED] if table == "summary" else list(a.columns)
        pd.testing.assert_frame_equal(a[cols], b[cols])
    assert (runs["remote"] / "results" / "s" / "figures" / "ecr_vs_width.png").stat().st_size > 10_000


def test_training_jobs_ran_as_named_slurm_jobs(runs):
    kinds = pd.Series(runs["jobs"]).value_counts().to_dict()
    # 2 float jobs; the 4 retrain cells as tasks of array jobs (one per float
    # network whose cells became ready together); data, tables and figures are local
    assert kinds == {"rule_train_float": 2, "rule_array": 4}
    assert 1 <= len({j.split("_")[0] for j in runs["jobs"] if "_" in j}) <= 2
    jobs = sacct(list(runs["jobs"]))
    assert set(jobs["State"]) == {"COMPLETED"}
    assert set(jobs["Account"]) == {ACCOUNT} and set(jobs["Partition"]) == {PARTITION}
    assert runs["run_id"].startswith("qdesign_") and set(jobs["JobName"]) == {runs["run_id"]}


def test_requested_resources_fit_what_jobs_used(runs):
    """Memory: at least the job's peak (wrappers included), at most 4x; time: at
    least the elapsed time, at most 3x of it or the floor."""
    jobs = sacct(list(runs["jobs"]))
    ok = (jobs["peak_mb"] <= jobs["req_mb"]) & (jobs["req_mb"] <= 4 * jobs["peak_mb"])
    ok &= jobs["elapsed_min"] <= jobs["limit_min"]
    ok &= jobs["limit_min"] <= (3 * jobs["elapsed_min"]).clip(lower=MIN_RUNTIME_MIN)
    assert ok.all(), jobs[["Elapsed", "Timelimit", "ReqMem", "MaxRSS", "peak_mb", "req_mb"]].to_string()


def test_failing_job_is_reported_as_failed(runs):
    work = runs["remote"]
    (work / "results" / "s" / "float" / "w8-s0" / "model.pt").write_bytes(b"corrupt")
    target = "results/s/fixed/b2/w8-s0/metrics.parquet"
    res = on_slurm(work, runs["config"], target, "--forcerun", target)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "SLURM-job" in out and "failed" in out and "FAILED" in out
    log = (work / "results" / "logs" / "retrain" / "s" / "fixed" / "b2" / "w8-s0.log").read_text()
    assert "qdesign: error: corrupt checkpoint" in log
    # the failed cell left no output a later run would trust
    assert not (work / "results" / "s" / "fixed" / "b2" / "w8-s0" / "metrics.parquet").exists()


def test_scancel_of_a_running_job_ends_the_run_with_a_failure(cluster, tmp_path):
    """With the profile's squeue status command a cancelled job is reported
    failed within seconds (with sacct, plugin 2.8.0 waits forever)."""
    config = tiny_config(
        tmp_path / "long.yaml",
        model={"type": "fcdnn", "depth": 2, "widths": [8]},
        bits=[2],
        training={"epochs": 100000, "lr": 0.01, "batch_size": 64},
    )
    out = tmp_path / "snakemake.log"
    with out.open("w") as fh:
        proc = subprocess.Popen(
            snakemake_cmd(tmp_path / "work", config, *SLURM_ARGS, timeout=240),
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        job, state = None, ""
        for _ in range(240):
            found = SUBMITTED.search(out.read_text())
            if found:
                job = found.group(1)
                state = subprocess.run(
                    ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True
                ).stdout.strip()
                if state == "RUNNING":
                    break
            time.sleep(0.5)
        assert state == "RUNNING", out.read_text()[-3000:]
        time.sleep(3)  # the training process has started
        t0 = time.monotonic()
        subprocess.run(["scancel", job], check=True, timeout=30)
        rc = proc.wait(timeout=150)
        waited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.read_text()
    assert rc != 0 and rc != 124, log[-3000:]
    assert f"SLURM-job '{job}' failed" in log and "CANCELLED" in log, log[-3000:]
    assert waited < 120


def test_grouped_cells_run_in_one_slurm_job(runs, tmp_path):
    """Job grouping as documented in profiles/slurm: the retrain cells of a
    study run in one cluster job, capped at 2 CPUs (the rest in series). The
    float networks and data are copied from the local run, so that only the
    group job goes to the cluster."""
    work = tmp_path / "work"
    for part in ("data", "s/float"):
        shutil.copytree(runs["local"] / "results" / part, work / "results" / part)
    res = on_slurm(work, runs["config"], "--groups", "retrain=cells", "--group-components", "cells=4", "--cores", "2")
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    summary = pd.read_parquet(work / "results" / "s" / "summary.parquet")
    expected = pd.read_parquet(runs["local"] / "results" / "s" / "summary.parquet")
    cols = [c for c in COMPARED if c in summary.columns]
    pd.testing.assert_frame_equal(summary[cols], expected[cols])
    jobs = submitted(res.stderr + res.stdout)
    # all 4 retrain cells in a single group job, nothing else on the cluster
    assert len(jobs) == 1 and next(iter(jobs.values())).startswith("group_"), jobs
    assert set(sacct(list(jobs))["State"]) == {"COMPLETED"}


PROFILE_ARGS = [  # the profile as shipped (its status settings and retries), on this cluster
    "--workflow-profile",
    str(REPO / "profiles" / "slurm"),
    "--default-resources",
    f"slurm_account={ACCOUNT}",
    f"slurm_partition={PARTITION}",
    "mem_mb=1000",
    "runtime=10",
]


def profile_setting(key: str):
    return yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())[key]


def test_a_job_over_its_memory_request_is_killed_and_retried_with_more(cluster, tmp_path):
    """The CI cluster enforces --mem (.ci/slurm-up.sh: JobAcctGatherParams=OverMemoryKill): a float
    job asking 800 MB (its srun step needs ~1.1 GB) is killed, and the profile's retry asks twice as much and
    succeeds. The request is a set-resources expression of attempt, as docs/slurm.md says to write one."""
    config = tiny_config(tmp_path / "mem.yaml", model={"type": "fcdnn", "depth": 2, "widths": [8]}, bits=[2])
    work = tmp_path / "work"
    target = "results/s/float/w8-s0/metrics.parquet"
    res = snakemake(
        work,
        config,
        *PROFILE_ARGS,
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--set-resources",
        "train_float:mem_mb=attempt*800",
        "--",
        target,
        timeout=600,
    )
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert profile_setting("retries") >= 1
    jobs = [j for j, kind in submitted(log).items() if kind == "rule_train_float"]
    assert len(jobs) == 2, log[-3000:]
    acct = sacct(jobs)
    first, second = acct.loc[jobs[0]], acct.loc[jobs[1]]
    assert first["State"] in ("OUT_OF_MEMORY", "FAILED") and first["req_mb"] == 800
    assert first["peak_mb"] > first["req_mb"], acct.to_string()
    assert second["State"] == "COMPLETED" and second["req_mb"] == 1600
    assert second["peak_mb"] <= second["req_mb"]
    slurm_log = next((work / ".snakemake" / "slurm_logs").rglob(f"{jobs[0]}.log")).read_text()
    assert "exceeded memory limit" in slurm_log
    assert (work / target).is_file()


def test_scancel_with_the_shipped_profile_is_noticed_in_seconds_then_retried_once(cluster, tmp_path):
    """What docs/slurm.md says happens to a job a person cancels, with the profile as shipped
    (status checks every slurm-init-seconds-before-status-checks while jobs finish, retries: 1):
    the cancellation is noticed at the next status check, seconds later; Snakemake resubmits the
    job once with twice the memory; cancelling that one too ends the run with a failure."""
    init = profile_setting("slurm-init-seconds-before-status-checks")
    assert init <= 10 and profile_setting("retries") == 1
    config = tiny_config(
        tmp_path / "long.yaml",
        model={"type": "fcdnn", "depth": 2, "widths": [8]},
        bits=[2],
        training={"epochs": 100000, "lr": 0.01, "batch_size": 64},
    )
    out = tmp_path / "snakemake.log"
    target = "results/s/float/w8-s0/metrics.parquet"
    with out.open("w") as fh:
        proc = subprocess.Popen(
            snakemake_cmd(tmp_path / "work", config, *PROFILE_ARGS, "--", target, timeout=400),
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def running_job(skip=()):
        for _ in range(480):
            found = [j for j in SUBMITTED.findall(out.read_text()) if j[0] not in skip]
            if found:
                job = found[0][0]
                state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
                if state.stdout.strip() == "RUNNING":
                    return job
            if proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(out.read_text()[-3000:])

    try:
        first = running_job()
        time.sleep(3)
        t0 = time.monotonic()
        subprocess.run(["scancel", first], check=True, timeout=30)
        while f"SLURM-job '{first}' failed" not in out.read_text():
            assert time.monotonic() - t0 < 120 and proc.poll() is None, out.read_text()[-3000:]
            time.sleep(0.2)
        noticed = time.monotonic() - t0
        second = running_job(skip={first})  # the retry
        subprocess.run(["scancel", second], check=True, timeout=30)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.read_text()
    assert rc != 0 and rc != 124, log[-3000:]
    assert "CANCELLED" in log and f"SLURM-job '{second}' failed" in log
    assert noticed < 3 * init + 20, f"noticed after {noticed:.0f} s"
    acct = sacct([first, second])
    # twice the estimate, rounded up to 100 MB (qdesign.run.resources.mem_mb)
    assert 1.9 * acct.loc[first, "req_mb"] <= acct.loc[second, "req_mb"] <= 2 * acct.loc[first, "req_mb"]
    print(f"scancel noticed after {noticed:.1f} s; retried as job {second} with {acct.loc[second, 'ReqMem']}")


def test_ctrl_c_cancels_the_runs_jobs_and_resubmits_nothing(cluster, tmp_path):
    """The way docs/slurm.md gives to stop a run: SIGINT (Ctrl-C) to Snakemake cancels its running
    job and ends the run, with the profile's retries: 1 resubmitting nothing."""
    import signal  # noqa: PLC0415

    config = tiny_config(
        tmp_path / "long.yaml",
        model={"type": "fcdnn", "depth": 2, "widths": [8]},
        bits=[2],
        training={"epochs": 100000, "lr": 0.01, "batch_size": 64},
    )
    out = tmp_path / "snakemake.log"
    target = "results/s/float/w8-s0/metrics.parquet"
    with out.open("w") as fh:
        proc = subprocess.Popen(  # Ctrl-C reaches a foreground process: SIGINT not ignored
            snakemake_command(tmp_path / "work", "--configfile", config, *PROFILE_ARGS, "--", target),
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        job = None
        for _ in range(480):
            found = SUBMITTED.search(out.read_text())
            if found:
                job = found.group(1)
                state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
                if state.stdout.strip() == "RUNNING":
                    break
            time.sleep(0.5)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.read_text()
    assert rc != 0 and "Terminating processes on user request" in log, log[-3000:]
    assert len(SUBMITTED.findall(log)) == 1  # nothing resubmitted
    assert sacct([job]).loc[job, "State"].startswith("CANCELLED")
    assert subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip() == ""
