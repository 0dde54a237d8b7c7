"""The test harness itself: nothing a library does under pytest's capture may close it."""

from __future__ import annotations

import logging.config
import sys

from absl import logging as absl_logging


def test_absl_logs_to_the_real_stderr():
    # tests/conftest.py points it there; a capture file there would be closed by the next
    # dictConfig run inside a capsys test (see the comment in conftest.py).
    assert absl_logging.get_absl_handler().python_handler.stream is sys.__stderr__


def test_dict_config_inside_capsys_leaves_the_capture_open(capsys):
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    print("still captured")
    assert capsys.readouterr().out == "still captured\n"
