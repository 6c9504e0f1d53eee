"""The console scripts run in processes forked from one that has already imported torch,
coremltools and NeMo (a `multiprocessing` fork server): the same entry points, arguments,
environment and working folder as `run_cli`, each in a process of its own that a fault point can
kill, without paying the libraries' import time again for every run (they dominate a tiny build).
Sweeps' joblib workers are started by joblib itself, as in any run."""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

from .conftest import Run

# What every build imports: loaded once, in the fork server.
PRELOAD = [
    "torch",
    "coremltools",
    "nemo.collections.asr",
    "sortformer_build.cli.app",
    "sortformer_build.cli.publish",
]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)

SERVER_ENVIRONMENT = {"TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}

ENTRY_POINTS = {
    "sortformer-build": "sortformer_build.cli.app",
    "sortformer-build-publish": "sortformer_build.cli.publish",
}


def run_forked(program: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """`program args...` in a forked process; a process killed by signal N returns -N."""
    out, err = cwd / f".{program}.out", cwd / f".{program}.err"
    process = _context.Process(
        target=_main, args=(program, list(args), str(cwd), env or {}, str(out), str(err))
    )
    # The fork server starts with the first process, from this environment. Libraries it imports
    # read some variables once, there: tqdm reads TQDM_DISABLE, as in a command-line run
    # (`cli.logs.quiet_third_party`), and huggingface_hub reads HF_HUB_OFFLINE, which every
    # test run sets.
    with mock.patch.dict(os.environ, SERVER_ENVIRONMENT):
        process.start()
    process.join()
    assert process.exitcode is not None
    run = Run(process.exitcode, out.read_text(), err.read_text())
    out.unlink()
    err.unlink()
    return run


def _main(program: str, args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    os.chdir(cwd)
    os.environ.update({"HF_HUB_OFFLINE": "1", **env})
    tempfile.tempdir = None  # found again from TMPDIR, which `env` may set
    for descriptor, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(file, descriptor)
        os.close(file)
    sys.argv = [program, *args]
    module = __import__(ENTRY_POINTS[program], fromlist=["main"])
    code = 0
    try:
        module.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_build(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """`sortformer-build args...` as `run_cli` runs it, forked: for tests of what a job does, whose
    runs would otherwise spend most of their time importing the libraries."""
    return run_forked("sortformer-build", *args, cwd=cwd, env=env)
