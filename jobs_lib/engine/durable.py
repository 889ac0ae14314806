"""Durable jobs: steps that run once, checkpoints a job continues from, sleeps that hold nothing.

A handler's ``ctx.step(name, fn)`` runs `fn` once per job: its result is
written to the job document (``steps.<name>``) through the recorder, fenced by
the claim like every other write of the run, before the handler goes on. A
later attempt, continuation or wake-up replays the handler from the top and
each step already recorded returns its saved result without running. A result
too large to sit beside the others in the document (over `INLINE_STEP_BYTES`)
goes to a document of its own in the job's ``steps`` subcollection, named with
the claim's token so that a run that lost its lease never overwrites the
result another run recorded; the job document then names it.

``ctx.checkpoint(cursor)`` saves a position (with the next progress write, at
most once a second, and always when the slice ends) and is where a
continuable handler (``@handler(continuable=True)``) stops when the invocation
running it nears its end: the runner records a `jobs_lib.model.outcomes.Continued`
(pending at once, the attempt not counted) and the next created-event, tick or
worker goes on, the handler reading ``ctx.cursor``. Finishing a step clears the
cursor: a cursor belongs to the step that is running.

``ctx.sleep(seconds)`` records a `jobs_lib.model.outcomes.Slept`: the job is pending
until then, holding no slot, lease or instance; the n-th sleep of a handler is
recorded by its order, so the replay after the wake-up passes it.

The guarantees: a step's result is recorded at most once and, once recorded,
never computed again; its side effects happen at least once (a run killed
after the effect and before the record runs the step again), exactly once when
the run is not killed inside the step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs_lib.errors import PermanentError
from jobs_lib.store import encoded_size
from jobs_lib.store.results import storable_value

#: A step's name: what ``steps.<name>`` and a subcollection document id can hold without quoting
#: surprises.
STEP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: A step result up to this size is kept in the job document itself (one write records it).
INLINE_STEP_BYTES = 65_536
#: All inline step results of a job stay under this, leaving the document room for the rest.
INLINE_TOTAL_BYTES = 524_288
#: A result over this is refused (a Firestore document holds 1 MiB); save large data as a file.
MAX_STEP_BYTES = 1_000_000
#: Steps one job may record (each a field of the job document).
MAX_STEPS = 1000
#: Slices whose lengths the job keeps (the count of continuations is kept whole).
KEPT_SLICES = 50
#: A continuable handler is not started with less than this left in the invocation.
MIN_SLICE_SECONDS = 5.0
#: The end of a slice is this far before the invocation's own end (time to record the continuation).
SLICE_MARGIN_SECONDS = 10.0


class Suspend(BaseException):
    """Raised by ``ctx.checkpoint`` and ``ctx.sleep`` to end the invocation; the runner records a
    continuation or a sleep. A BaseException, like `asyncio.CancelledError`, so that a handler's
    ``except Exception`` does not swallow it."""

    def __init__(self, *, until: datetime | None = None, index: int = 0) -> None:
        super().__init__("sleeping" if until is not None else "continuing in the next slice")
        #: A sleep's end (None: a continuation).
        self.until = until
        self.index = index


def check_step_name(name: object) -> str:
    """A step name, checked (letters, digits, ``_`` and ``-``, at most 128)."""
    if not isinstance(name, str) or not STEP_NAME.match(name):
        raise ValueError(
            f"a step name must be 1 to 128 letters, digits, '_' or '-' (e.g. f'send-{{i}}'); got "
            f"{name!r}"
        )
    return name


@dataclass
class SavedStep:
    """A step's record as the job document holds it."""

    value: Any = None
    #: The document holding a large result (its id in the job's ``steps`` subcollection), or None.
    document: str | None = None


def saved_steps(raw: object) -> dict[str, SavedStep]:
    """The steps a job document records (``steps``: name -> {value} or {document})."""
    found: dict[str, SavedStep] = {}
    if not isinstance(raw, dict):
        return found
    for name, record in raw.items():
        if isinstance(record, dict) and isinstance(name, str):
            document = record.get("document")
            found[name] = SavedStep(
                record.get("value"), document if isinstance(document, str) else None
            )
    return found


def step_value(name: str, value: Any) -> tuple[Any, int]:
    """A step's result as it is stored (pydantic models dumped, tuples as lists) and its size;
    raises `PermanentError` when it cannot be stored (retrying would not change that)."""
    problem, stored = storable_value(value, f"step {name!r}")
    if problem:
        raise PermanentError(problem)
    size = encoded_size(stored) if stored is not None else 1
    if size > MAX_STEP_BYTES:
        raise PermanentError(
            f"step {name!r} returned {size:,} bytes, more than a step may store "
            f"({MAX_STEP_BYTES:,}); "
            "save large data elsewhere (such as Cloud Storage) and return a reference"
        )
    return stored, size


def cursor_value(cursor: Any) -> Any:
    """A checkpoint's cursor as stored; raises ValueError when it cannot be."""
    problem, stored = storable_value(cursor, "the cursor")
    if problem:
        raise ValueError(problem)
    if stored is not None and encoded_size(stored) > INLINE_STEP_BYTES:
        raise ValueError(
            f"a cursor must stay under {INLINE_STEP_BYTES:,} bytes: save a position (an id, an "
            f"offset), not the data"
        )
    return stored


__all__ = [
    "INLINE_STEP_BYTES",
    "INLINE_TOTAL_BYTES",
    "KEPT_SLICES",
    "MAX_STEPS",
    "MAX_STEP_BYTES",
    "MIN_SLICE_SECONDS",
    "SLICE_MARGIN_SECONDS",
    "SavedStep",
    "Suspend",
    "check_step_name",
    "cursor_value",
    "saved_steps",
    "step_value",
]
