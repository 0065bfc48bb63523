"""qdesign.run.scheduling: one pending Snakemake scheduler wake-up at a time."""

import threading
import time

from qdesign.run.scheduling import METHOD, single_reevaluation_timer


class FakeScheduler:
    def __init__(self):
        self._open_jobs = threading.Semaphore(0)
        self.armed = 0

    def _schedule_reevalutation(self, delay):  # Snakemake's: one more timer per call
        self.armed += 1


def test_many_requests_arm_one_daemon_timer_that_wakes_the_scheduler():
    cls = type("Patched", (FakeScheduler,), {})
    assert single_reevaluation_timer(cls)
    s = cls()
    for _ in range(50):
        getattr(s, METHOD)(0.2)
    assert s.armed == 0  # the original is replaced
    pending = s._qdesign_reevaluation
    assert pending.daemon and pending.is_alive()
    assert not s._open_jobs.acquire(timeout=0.05)  # not yet
    assert s._open_jobs.acquire(timeout=5)  # one wake-up after the delay...
    time.sleep(0.1)
    assert not s._open_jobs.acquire(timeout=0.3)  # ...and only one
    getattr(s, METHOD)(0.01)  # none pending: the next request arms a new one
    assert s._open_jobs.acquire(timeout=5)


def test_snakemakes_scheduler_still_has_the_method():
    """If Snakemake renames it the patch does nothing (and this fails, so that we know)."""
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert single_reevaluation_timer(type("Sub", (JobScheduler,), {}))
    assert not single_reevaluation_timer(type("Other", (), {}))
