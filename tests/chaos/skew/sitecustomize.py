"""Loaded by Python at start-up when this folder is on PYTHONPATH: skews time.time() by
JOBS_TEST_CLOCK_SKEW seconds, as a machine whose clock is wrong would."""

import os
import time

_skew = float(os.environ.get("JOBS_TEST_CLOCK_SKEW", "0") or 0)
if _skew:
    _real_time, _real_time_ns = time.time, time.time_ns
    time.time = lambda: _real_time() + _skew
    time.time_ns = lambda: _real_time_ns() + int(_skew * 1e9)
