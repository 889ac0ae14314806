"""A short soak in the test command (`python -m bench.soak` runs the long one and writes its
figures).

A steady stream of jobs through two `jobs worker` processes, one restarted every 15 s, the real
tick every 10 s, a schedule firing every minute, and the cleanup deleting finished jobs past a
20 s retention: every job ends, none is deleted before it finished and expired, no cleanup run
deletes more than its batch, and the long-lived worker's threads and memory stay flat.
"""

from __future__ import annotations

import pytest

from bench.soakrun import Soak


@pytest.mark.heavy
def test_a_short_soak_keeps_every_promise() -> None:
    figures = Soak(
        seconds=30, per_minute=480, restart_every=10, window=10, cleanup_at_end=True
    ).run()
    print("soak figures:", figures)
    assert figures["problems"] == [] and figures["unfinished"] == 0, figures
    assert figures["jobs"] >= 200 and figures["worker starts"] >= 4, figures
    assert figures["deleted by cleanup"] > 0 and figures["cleanup runs over their batch"] == 0, (
        figures
    )
    assert figures["documents at the end"] < figures["jobs"], (
        figures
    )  # retention keeps the collection bounded
    threads_start, threads_end = figures["steady worker threads start/end"]
    rss_start, rss_end = figures["steady worker RSS MB start/end"]
    assert threads_end <= threads_start + 8, figures
    assert rss_end <= rss_start * 1.5 + 20, figures
