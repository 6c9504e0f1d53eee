"""The cores a job may use: every core alone, joblib's share in a sweep's worker, the share among
the sweep's running jobs (real processes holding their registrations), a part of a job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sortformer_build.cores import (
    CORE_PART_VARIABLE,
    JOB_FILE_VARIABLE,
    REGISTER_VARIABLE,
    THREAD_LIMIT_VARIABLES,
    RunningJobs,
    job_cores,
    share,
    usable_cores,
)

# A job of a sweep: registers, says its file's name, runs until its stdin says it is done.
_JOB = """
import sys
from pathlib import Path
from sortformer_build.cores import RunningJobs
with RunningJobs(Path(sys.argv[1])).running() as path:
    print(path.name, flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No thread limit, no register, no part in this process's environment."""
    for name in (*THREAD_LIMIT_VARIABLES, REGISTER_VARIABLE, JOB_FILE_VARIABLE, CORE_PART_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_shares_cover_every_core_once() -> None:
    assert [share(8, 3, i) for i in range(3)] == [3, 3, 2]
    assert [share(2, 2, i) for i in range(2)] == [1, 1]
    assert share(1, 3, 2) == 1  # never zero


def test_a_job_has_every_core_unless_its_worker_was_given_a_share(alone: pytest.MonkeyPatch) -> None:
    assert job_cores() == usable_cores()
    alone.setenv("OMP_NUM_THREADS", "1")  # what joblib sets in a worker of a full machine
    assert job_cores() == 1
    alone.setenv("OMP_NUM_THREADS", str(usable_cores() + 5))
    assert job_cores() == usable_cores()
    alone.setenv("OMP_NUM_THREADS", "3")
    alone.setenv(CORE_PART_VARIABLE, "1/2")  # the second of two worker processes of the job
    assert job_cores() == share(min(3, usable_cores()), 2, 1)


def test_running_jobs_share_the_cores_and_a_killed_job_stops_counting(
    tmp_path: Path, alone: pytest.MonkeyPatch
) -> None:
    register = tmp_path / "running-jobs"
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", _JOB, str(register)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        first, second, third = names = [job.stdout.readline().strip() for job in jobs]  # type: ignore[union-attr]
        running = RunningJobs(register)
        assert running.members() == sorted(names)
        assert sorted(running.share_of(name, 8) or 0 for name in names) == [2, 3, 3]
        (register / "other-host-0123456789ab-1-x.job").touch()  # another host's job: not ours to count
        assert len(running.members()) == 3

        alone.setenv(REGISTER_VARIABLE, str(register))
        alone.setenv(JOB_FILE_VARIABLE, third)
        alone.setenv("OMP_NUM_THREADS", "1")  # joblib's share: the register overrides it
        assert job_cores() == share(usable_cores(), 3, sorted(names).index(third))

        jobs[0].kill()
        jobs[0].wait()
        assert sorted(running.members()) == sorted((second, third))
        assert not (register / first).exists()  # the dead job's file went with the count

        jobs[1].communicate("done\n")
        assert running.members() == [third]
        assert running.share_of(third, 8) == 8
        assert job_cores() == usable_cores()  # the last job running takes every core
        assert running.share_of(first, 8) is None
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    assert RunningJobs(register).members() == []
