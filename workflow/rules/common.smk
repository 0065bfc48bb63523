# Shared set-up: config validation, the cell grid, paths, resources, and the
# warm worker that serves training jobs on local runs.
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from qdesign.core import config as qconfig
from qdesign.core import layout
from qdesign.core.precision import Precision
from qdesign.core import registry
from qdesign.run import resources as qres
from qdesign.core import specs as qspecs
from qdesign.run import console as qconsole
from qdesign.run import lifeline as qlifeline
from qdesign.run import worker as qworker
from qdesign.run.scheduling import single_reevaluation_timer

# one pending scheduler wake-up instead of one more per finished job (qdesign.run.scheduling)
single_reevaluation_timer()

_RUN_START = time.time()
# local jobs end when this Snakemake process dies, even by kill -9 (qdesign.run.lifeline)
qlifeline.mark_owner()

# A --configfile replaces config/config.yaml instead of extending it (a paper
# grid must not also run the default digits studies); --config key=value
# still edits whichever config is in use.
_raw_config = (
    workflow.config_settings.overwrite_config if workflow.config_settings.configfiles else config
)
try:
    _validated = qconfig.validate_config(_raw_config)
except qconfig.ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)
# a search's grid and budgets are checked here, in one line, before any job
if any(study["search"] is not None for study in config["studies"].values()):
    from qdesign.analysis import search as qsearch

    for _study in config["studies"]:
        if config["studies"][_study]["search"] is not None:
            try:
                qsearch.grid_from_study(config, _study)
            except qconfig.ConfigError as exc:
                raise WorkflowError(str(exc)) from None

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
FIGURES = registry.FIGURES
# one splits file per distinct split: studies with the same split share it
SPLITS = {
    qspecs.split_tag(key): key
    for key in (qspecs.study_split_key(config, study) for study in STUDIES)
}


wildcard_constraints:
    study="|".join(STUDIES),
    split="|".join(re.escape(tag) for tag in SPLITS),
    dataset="|".join(registry.DATASETS),
    method="|".join(registry.METHODS),
    width=r"\d+",
    bits=r"\d+(-\d+)*",
    mean=r"\d+(\.\d+)?",
    seed=r"\d+",
    profile=r"[A-Za-z0-9_-]+",
    ref_study=r"[A-Za-z][A-Za-z0-9-]*",


def study_cfg(study):
    return config["studies"][study]


def prepare_args(wildcards):
    """Where a torchvision dataset is read or downloaded; digits needs neither,
    so that editing data_dir or download never re-prepares it."""
    if registry.DATASETS[wildcards.dataset].reader == "digits":
        return ""
    flag = "--download" if config["download"] else "--no-download"
    # only when off: a default config's command is unchanged (nothing is prepared again)
    own = "" if config["verify_checksums"] else " --no-verify-checksums"
    return f"--data-dir {shlex.quote(config['data_dir'])} {flag}{own}"


def data_file(wildcards):
    return layout.data_file(study_cfg(wildcards.study)["dataset"])


def splits_file(wildcards):
    """The study's split, which its training jobs map instead of splitting."""
    return layout.splits_file(qspecs.split_tag(qspecs.study_split_key(config, wildcards.study)))


def cell_files(study):
    """model.pt and metrics.parquet of every uniform-precision cell of a study."""
    return [
        f"{c.dir}/{name}" for c in qspecs.study_cells(config, study) for name in layout.CELL_FILES
    ]


def cell_metrics(wildcards):
    return [p for p in cell_files(wildcards.study) if p.endswith("metrics.parquet")]


def mixed_cell_files(study):
    """model.pt and metrics.parquet of every mixed-precision cell (none without `mixed`)."""
    return [
        f"{c.dir}/{name}" for c in qspecs.mixed_cells(config, study) for name in layout.CELL_FILES
    ]


def mixed_cell_metrics(wildcards):
    return [p for p in mixed_cell_files(wildcards.study) if p.endswith("metrics.parquet")]


def sensitivity_files(wildcards):
    s = study_cfg(wildcards.study)
    return [
        layout.sensitivity_file(wildcards.study, w, seed)
        for w in s["model"]["widths"]
        for seed in s["seeds"]
    ]


def study_outputs(study):
    out = [layout.table_file(study, t) for t in registry.TABLES]
    out += [
        layout.figure_file(study, name, ext)
        for name in FIGURES
        for ext in config["plots"]["formats"]
    ]
    out += [layout.report_page(study, page) for page in ("answer", "tables")]
    if qspecs.has_mixed(config, study):
        out += [layout.table_file(study, t) for t in registry.MIXED_TABLES]
        out.append(layout.report_page(study, "mixed"))
        out += [
            layout.figure_file(study, name, ext)
            for name in registry.MIXED_FIGURES
            for ext in config["plots"]["formats"]
        ]
    return out


def has_recommend(study):
    return bool(study_cfg(study)["recommend"]["budgets"])


def recommended_cell_metrics(wildcards):
    """metrics.parquet of every seed of every design the closed loop trains
    (read from the recommend_designs checkpoint's table)."""
    import pandas as pd

    from qdesign.analysis import recommend as qrecommend  # scipy: only once designs exist

    designs = pd.read_parquet(checkpoints.recommend_designs.get(study=wildcards.study).output[0])
    seeds = study_cfg(wildcards.study)["seeds"]
    out = []
    for method, width, bits in qrecommend.design_cells(designs):
        precision = Precision.coerce(bits)
        for seed in seeds:
            cell = qspecs.Cell(
                wildcards.study, width, seed, precision, None if precision.is_float else method
            )
            out.append(f"{cell.dir}/metrics.parquet")
    return out


def has_search(study):
    return study_cfg(study)["search"] is not None


GRID_STUDIES = [s for s in STUDIES if not has_search(s)]
"""Studies that train their whole grid (a study with a search section trains what its search asks for)."""


def search_outputs(study):
    out = [layout.table_file(study, registry.SEARCH_TABLE), layout.report_page(study, "search")]
    return out + [
        layout.figure_file(study, name, ext)
        for name in registry.SEARCH_FIGURES
        for ext in config["plots"]["formats"]
    ]


def search_method(study):
    s = study_cfg(study)
    return s["search"]["method"] or s["retraining"]["methods"][0]


def search_round(study, r):
    """(path, record) of a finished round: a checkpoint, asked for in order."""
    path = checkpoints.search_round.get(study=study, round=r).output[0]
    try:
        record = json.loads(Path(path).read_text())
        record["batch"], record["stop"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise WorkflowError(
            f"{path} is not a search round ({type(exc).__name__}): delete it and rerun"
        ) from None
    return path, record


def search_records(study, n):
    """The records of rounds 0..n-1."""
    return [search_round(study, r) for r in range(n)]


def search_history(wildcards):
    return [p for p, _ in search_records(wildcards.study, int(wildcards.round))]


def search_cell_metrics(wildcards):
    """metrics.parquet of every cell the earlier rounds asked for."""
    from qdesign.analysis import search as qsearch

    records = [r for _, r in search_records(wildcards.study, int(wildcards.round))]
    method = search_method(wildcards.study)
    out = []
    for width, bits, seed in qsearch.cells_of(records):
        precision = Precision.coerce(bits)
        cell = qspecs.Cell(
            wildcards.study, width, seed, precision, None if precision.is_float else method
        )
        out.append(f"{cell.dir}/metrics.parquet")
    return out


def search_rounds(wildcards):
    """Round files 0, 1, ... up to the first that says stop."""
    out, r = [], 0
    while True:
        path, record = search_round(wildcards.study, r)
        out.append(path)
        if record["stop"] is not None:
            return out
        r += 1


def all_targets():
    """Tables, figures, report pages and every cell's files: a lost cell is rebuilt."""
    out = [
        p
        for study in GRID_STUDIES
        for p in study_outputs(study) + cell_files(study) + mixed_cell_files(study)
    ]
    out += [p for study in STUDIES if has_search(study) for p in search_outputs(study)]
    out += [layout.table_file(s, "recommendations") for s in GRID_STUDIES if has_recommend(s)]
    return out + ([layout.PROVENANCE_PAGE] if GRID_STUDIES else [])


def figure_outputs(pattern, category, names=FIGURES):
    """The figure files of one study, PNGs marked for the report."""
    out = []
    for name in names:
        for ext in config["plots"]["formats"]:
            path = pattern.replace("{figure}", name).replace("{ext}", ext)
            if ext == "png":
                path = report(
                    path,
                    caption=f"../report/{name}.rst",
                    category=category,
                    subcategory="figures",
                    labels={"figure": name.replace("_", " ")},
                )
            out.append(path)
    return out


def mixed_figure_outputs(pattern, category):
    return figure_outputs(pattern, category, registry.MIXED_FIGURES)


def reference_studies():
    """(profile, study) of every shipped reference study, reference/<profile>/<study>/."""
    found = glob_wildcards(layout.reference_table("summary"))
    return list(zip(found.profile, found.ref_study))


def reference_search_studies():
    """(profile, study) of every shipped search study, reference/<profile>/<study>/search.parquet."""
    found = glob_wildcards(layout.reference_table(registry.SEARCH_TABLE))
    return list(zip(found.profile, found.ref_study))


def reference_summaries(profile):
    """The cell tables of a shipped profile: grid summaries, a search's cells."""
    grid = [layout.reference_table("summary", p, s) for p, s in reference_studies() if p == profile]
    searched = [
        layout.reference_table(registry.SEARCH_CELLS_TABLE, p, s)
        for p, s in reference_search_studies()
        if p == profile
    ]
    return grid + searched


def reference_targets():
    """Figures and report pages of the shipped reference tables, reference/<profile>/<study>/."""
    out = []
    for profile, study in reference_studies():
        names, pages = list(FIGURES), ["answer", "tables"]
        if os.path.isfile(layout.reference_table("mixed", profile, study)):
            names += registry.MIXED_FIGURES
            pages.append("mixed")
        out += [
            layout.reference_figure(profile, study, name, ext)
            for name in names
            for ext in config["plots"]["formats"]
        ]
        out += [layout.reference_report_page(profile, study, page) for page in pages]
    for profile, study in reference_search_studies():
        out += [
            layout.reference_figure(profile, study, name, ext)
            for name in registry.SEARCH_FIGURES
            for ext in config["plots"]["formats"]
        ]
        out.append(layout.reference_report_page(profile, study, "search"))
    profiles = {p for p, _ in reference_studies() + reference_search_studies()}
    out += [layout.reference_provenance_page(p) for p in sorted(profiles)]
    return out


# ---------------------------------------------------------------- resources


def job_threads(wildcards):
    return study_cfg(wildcards.study)["threads"]


def job_device(wildcards):
    return qspecs.study_device(config, wildcards.study)


def job_mem_mb(wildcards, attempt):
    return qres.mem_mb(
        study_cfg(wildcards.study), int(wildcards.width), attempt, device=job_device(wildcards)
    )


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
        from qdesign.run import cli as qcli

        # from Snakemake's main thread: the worker dies with the thread that started it
        _worker["proc"] = qworker.start(
            layout.WORKER_LOG, handler=qcli.WORKER_HANDLER, preload=qcli.WORKER_PRELOAD
        )


onsuccess:
    qworker.stop(_worker.pop("proc", None))
    # cells flagged in this run (chance level, diverged): said here, not only in their logs
    qconsole.report_run(f"{layout.RESULTS}/logs", _RUN_START)
    # a run of the default target ends with what it found, per study
    if workflow.is_main_process and "all" in {j.rule.name for j in workflow.dag.targetjobs}:
        from qdesign.analysis import answer as qanswer

        try:
            print(qanswer.closing_summary(GRID_STUDIES), flush=True)
            if len(GRID_STUDIES) < len(STUDIES):
                from qdesign.analysis import search as qsearch

                print(
                    qsearch.closing_summary([s for s in STUDIES if has_search(s)]), flush=True
                )
        except (
            Exception
        ) as exc:  # the run succeeded; a summary that cannot be made must not fail it
            print(f"qdesign: no summary ({type(exc).__name__}: {exc})", flush=True)


onerror:
    qworker.stop(_worker.pop("proc", None))
    qconsole.report_run(f"{layout.RESULTS}/logs", _RUN_START)
