"""Logging policy of the command-line tools."""

import logging
import warnings


def quiet_third_party() -> None:
    """Keep the log about this build: the libraries' import chatter says nothing actionable."""
    for name in ("coremltools", "nv_one_logger", "numba", "urllib3", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # NeMo resets its logger's level to INFO on import; a filter survives that.
    logging.getLogger("nemo_logger").addFilter(lambda record: record.levelno >= logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
