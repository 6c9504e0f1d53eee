"""Logging policy of the command-line tools: the log is about the build, in words a user reads."""

import logging
import os
import warnings


def quiet_third_party(verbose: bool = False) -> None:
    """Keep the log about this build: the libraries' import chatter says nothing actionable, and
    coremltools draws a progress bar for every pass of every conversion. `verbose` keeps the
    libraries' own progress bars and warnings."""
    if verbose:
        return
    for name in ("coremltools", "nv_one_logger", "numba", "urllib3", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # NeMo resets its logger's level to INFO on import; a filter survives that.
    logging.getLogger("nemo_logger").addFilter(lambda record: record.levelno >= logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # tqdm reads its defaults from the environment when it is first imported, which happens
    # only once a job loads coremltools or NeMo; bars of our own pass disable=False.
    os.environ.setdefault("TQDM_DISABLE", "1")
