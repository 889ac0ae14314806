"""Which handler results can be stored (no emulator needed)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from jobs_lib.store.results import storable_result


class Report(BaseModel):
    rows: int
    url: str


@pytest.mark.parametrize("value", [None, 0, 1.5, "ok", True, [1, "a", None], {"a": {"b": [1, 2]}}])
def test_json_like_values_are_stored_as_they_are(value: Any) -> None:
    assert storable_result(value, {}) == (None, value)


def test_pydantic_models_and_tuples_are_converted() -> None:
    assert storable_result(Report(rows=3, url="gs://b/o"), {}) == (
        None,
        {"rows": 3, "url": "gs://b/o"},
    )
    assert storable_result((1, 2), {}) == (None, [1, 2])


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({1: "a"}, "non-string key 1"),
        ([[1, 2]], "a list inside a list"),
        (float("inf"), "inf"),
        (2**70, "64-bit"),
        ({"s": {1, 2}}, "result.s is a builtins.set"),
    ],
)
def test_other_values_are_refused_with_the_path(value: Any, fragment: str) -> None:
    problem, stored = storable_result(value, {})
    assert problem is not None and fragment in problem and stored is None


def test_size_counts_the_rest_of_the_document() -> None:
    assert storable_result("x" * 500_000, {})[0] is None
    problem, _ = storable_result("x" * 500_000, {"metadata": {"blob": "y" * 600_000}})
    assert problem is not None and "1 MiB" in problem
