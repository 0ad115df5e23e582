"""Logging for jobs run by the workflow: progress lines and any traceback go to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


@contextlib.contextmanager
def job_log(path: str | None, what: str):
    """Send logging (INFO) and stderr to ``path``; log a failure with its traceback, then re-raise."""
    if not path:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        yield logging.getLogger("bayes_transfer")
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        old_stderr = sys.stderr
        sys.stderr = fh
        logger = logging.getLogger("bayes_transfer")
        try:
            logger.info("start: %s", what)
            yield logger
            logger.info("done: %s", what)
        except BaseException:
            logger.exception("failed: %s", what)
            raise
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)
