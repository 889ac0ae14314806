"""Can a handler's return value be stored in the job document?

Results must be JSON-like (None, bool, number, string, list, map with string
keys; pydantic models are dumped to that) and fit, with the rest of the
document, under Firestore's 1 MiB document limit. The emulator does not
enforce that limit, so it is checked here, before the write.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from jobs_lib.store.wire import encoded_size


def encodable(text: str) -> bool:
    """Is `text` valid Unicode that Firestore can store (no lone surrogates)?"""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


#: Firestore's maximum document size.
DOCUMENT_LIMIT = 1_048_576
#: Room kept for the runner's own fields (status, timestamps, lease, progress, error).
RUNNER_FIELDS_ALLOWANCE = 16_384
#: Firestore nests maps and arrays at most this deep.
MAX_DEPTH = 20


#: Results smaller than this cannot push a document over the limit by themselves;
#: a document already near it is refused by Firestore and recorded as failed.
SMALL_RESULT = 65_536


def _problem(value: Any, path: str, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"{path} nests deeper than Firestore's limit of {MAX_DEPTH} levels"
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            return f"{path} is an integer outside the 64-bit range Firestore stores"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value}, which JSON cannot represent"
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, (list, tuple)):
                return f"{path}[{i}] is a list inside a list, which Firestore cannot store"
            problem = _problem(item, f"{path}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-string key {key!r}"
            problem = _problem(item, f"{path}.{key}", depth + 1)
            if problem:
                return problem
        return None
    return (
        f"{path} is a {type(value).__module__}.{type(value).__qualname__}, not JSON-like "
        f"(return numbers, strings, lists and maps)"
    )


def _cheap_size(value: Any) -> int:
    """A quick upper-bound guess of a value's size, to skip encoding small results."""
    if value is None or isinstance(value, (bool, int, float)):
        return 16
    if isinstance(value, str):
        return len(value) * 4 + 16
    return SMALL_RESULT if isinstance(value, (dict, list)) and value else 16


def storable_value(value: Any, what: str) -> tuple[str | None, Any]:
    """Check a value bound for a document (a result, a step's result, a cursor): returns (problem or
    None, the value as stored: a pydantic model dumped, a tuple as a list)."""
    pydantic = sys.modules.get(
        "pydantic"
    )  # a model value means pydantic is loaded: never import it here
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    problem = _problem(value, "result", 0)
    if problem:
        return f"{what} cannot be stored: {problem}", None
    return None, value


def storable_result(result: Any, document: dict[str, Any]) -> tuple[str | None, Any]:
    """Check a handler's return value; returns (problem or None, the value to store)."""
    problem, result = storable_value(result, "the handler's result")
    if problem:
        return problem, None
    if _cheap_size(result) < SMALL_RESULT:
        return None, result
    size = encoded_size(result)
    room = (
        DOCUMENT_LIMIT
        - encoded_size({k: v for k, v in document.items() if k != "result"})
        - RUNNER_FIELDS_ALLOWANCE
    )
    if size > room:
        return (
            f"the handler's result cannot be stored: it is {size:,} bytes and the job document "
            f"has room "
            f"for {max(room, 0):,} (Firestore documents are limited to 1 MiB); store large results "
            "elsewhere, such as Cloud Storage, and return a reference",
            None,
        )
    return None, result


__all__ = ["DOCUMENT_LIMIT", "encodable", "encoded_size", "storable_result", "storable_value"]
