# Shared set-up: config validation, the cell grid, paths, resources, and the
# warm worker that serves training jobs on local runs.
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from qdesign import config as qconfig
from qdesign import resources as qres
from qdesign import worker as qworker

# A --configfile replaces config/config.yaml instead of extending it (a paper
# grid must not also run the default digits studies); --config key=value
# still edits whichever config is in use.
_raw_config = (
    workflow.config_settings.overwrite_config
    if workflow.config_settings.configfiles
    else config
)
try:
    _validated = qconfig.validate_config(_raw_config)
except qconfig.ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)

# Jobs call `python -m qdesign`. src/ is put on PYTHONPATH so that it imports
# without `pip install -e .` (e.g. in a conda environment made from envs/);
# unless Snakemake activates a conda environment per rule (--sdm conda), the
# interpreter running Snakemake comes first on PATH, so jobs use the same
# environment even when it is not activated.
_SRC = Path(workflow.basedir) / "src"
_PREFIX = [f"export PYTHONPATH='{_SRC}'${{{{PYTHONPATH:+:$PYTHONPATH}}}};"]
if "conda" not in {str(m) for m in workflow.deployment_settings.deployment_method}:
    _PREFIX.insert(0, f"export PATH='{Path(sys.executable).parent}':\"$PATH\";")
shell.prefix(" ".join(_PREFIX) + " ")
STUDIES = list(config["studies"])
FIGURES = ["error_vs_weights", "error_vs_memory", "ecr_vs_width", "retrain_gap"]


wildcard_constraints:
    study="|".join(STUDIES),
    dataset="digits|mnist|fashion-mnist|cifar10",
    width=r"\d+",
    bits=r"\d+",
    seed=r"\d+",
    profile=r"[A-Za-z0-9_-]+",
    ref_study=r"[A-Za-z][A-Za-z0-9-]*",


def study_cfg(study):
    return config["studies"][study]


def prepare_args(wildcards):
    """Where a torchvision dataset is read or downloaded; digits needs neither,
    so that editing data_dir or download never re-prepares it."""
    if wildcards.dataset == "digits":
        return ""
    flag = "--download" if config["download"] else "--no-download"
    return f"--data-dir {shlex.quote(config['data_dir'])} {flag}"


def data_file(wildcards):
    return f"results/data/{study_cfg(wildcards.study)['dataset']}.pt"


def float_dir(study, width, seed):
    return f"results/{study}/float/w{width}-s{seed}"


def cell_dir(study, width, bits, seed):
    if int(bits) == qconfig.FLOAT_BITS:
        return float_dir(study, width, seed)
    return f"results/{study}/b{bits}/w{width}-s{seed}"


def cell_metrics(wildcards):
    return [
        f"{cell_dir(c.study, c.width, c.bits, c.seed)}/metrics.parquet"
        for c in qconfig.study_cells(config, wildcards.study)
    ]


def study_outputs(study):
    out = [f"results/{study}/{t}.parquet" for t in ("summary", "ecr", "frontier")]
    out += [
        f"results/{study}/figures/{name}.{ext}"
        for name in FIGURES
        for ext in config["plots"]["formats"]
    ]
    return out


def all_targets():
    return [path for study in STUDIES for path in study_outputs(study)]


def reference_targets():
    """Figures of the shipped reference tables, reference/<profile>/<study>/."""
    found = glob_wildcards("reference/{profile}/{ref_study}/summary.parquet")
    return [
        f"results/reference/{profile}/{study}/figures/{name}.{ext}"
        for profile, study in zip(found.profile, found.ref_study)
        for name in FIGURES
        for ext in config["plots"]["formats"]
    ]


# ---------------------------------------------------------------- resources


def job_threads(wildcards):
    return study_cfg(wildcards.study)["threads"]


def job_device(wildcards):
    return qconfig.study_device(config, wildcards.study)


def job_mem_mb(wildcards, attempt):
    return qres.mem_mb(study_cfg(wildcards.study), int(wildcards.width), attempt)


def job_runtime(phase):
    def runtime(wildcards, attempt):
        return qres.runtime_min(
            study_cfg(wildcards.study),
            int(wildcards.width),
            phase,
            job_device(wildcards),
            job_threads(wildcards),
            attempt,
        )

    return runtime


def job_gpu(wildcards):
    # only an explicit 'cuda' reserves a GPU; 'auto' uses one if it is there
    return 1 if job_device(wildcards) == "cuda" else 0


# ---------------------------------------------------------------- warm worker
_worker = {}


onstart:
    if (
        config["worker"]
        and workflow.local_exec
        and workflow.is_main_process
        and os.environ.get("QDESIGN_WORKER", "1") != "0"
    ):
        from qdesign import cli as qcli

        # from Snakemake's main thread: the worker dies with the thread that started it
        _worker["proc"] = qworker.start("results/logs/worker.log", handler=qcli.WORKER_HANDLER,
                                        preload=qcli.WORKER_PRELOAD)


onsuccess:
    qworker.stop(_worker.pop("proc", None))


onerror:
    qworker.stop(_worker.pop("proc", None))
