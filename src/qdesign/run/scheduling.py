"""One pending scheduler wake-up at a time in Snakemake's job scheduler.

With a job rate limit set (Snakemake's default, ``--max-jobs-per-timespan
100/1s``), every pass of ``JobScheduler.schedule`` ends by arming a
``threading.Timer`` that wakes the scheduler again one timespan later, and
that wake-up's pass arms the next. Every finished job also wakes the
scheduler and so starts one more such chain: N jobs into a run the scheduler
wakes up N times a second, and each pass stats the inputs of every ready
job. In the default study (243 jobs, 2 cores) that was 25 s of Snakemake's
own CPU time of about 225 s in all (measured under load; docs/performance.md,
seventh pass), taken from the training jobs it schedules.

:func:`single_reevaluation_timer` replaces the method that arms the timer
with one that arms it only when none is pending (a daemon timer, so that it
does not hold up Snakemake's exit either). A pass still follows every job's
end, and a rate-limited pass still gets its wake-up within one timespan, so
which jobs run when is unchanged. Applied by ``workflow/rules/common.smk``;
where Snakemake's scheduler no longer has the method, nothing is changed.
"""

from __future__ import annotations

import threading

METHOD = "_schedule_reevalutation"  # sic: Snakemake's spelling


def _schedule_one(self, delay) -> None:
    pending = getattr(self, "_qdesign_reevaluation", None)
    if pending is not None and pending.is_alive():
        return
    timer = threading.Timer(delay, self._open_jobs.release)
    timer.daemon = True
    timer.start()
    self._qdesign_reevaluation = timer


def single_reevaluation_timer(scheduler_cls=None) -> bool:
    """Patch ``scheduler_cls`` (default: Snakemake's ``JobScheduler``); True if patched."""
    if scheduler_cls is None:
        try:
            from snakemake.scheduling.job_scheduler import JobScheduler as scheduler_cls  # noqa: PLC0415
        except ImportError:
            return False
    if not callable(getattr(scheduler_cls, METHOD, None)):
        return False
    setattr(scheduler_cls, METHOD, _schedule_one)
    return True
