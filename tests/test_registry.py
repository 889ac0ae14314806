"""The handler registry and retry policies (no emulator needed)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import BaseModel

from jobs_lib import Backoff, JobContext
from jobs_lib.app import load_handler_modules
from jobs_lib.errors import ConfigurationError, DuplicateHandlerError
from jobs_lib.registry import HandlerRegistry


def fn(ctx: JobContext[Any]) -> None:
    return None


def test_duplicate_type_is_an_error_at_registration() -> None:
    registry = HandlerRegistry()
    registry.handler("a")(fn)
    with pytest.raises(DuplicateHandlerError, match="'a' is already registered"):
        registry.handler("a")(fn)


def test_alias_resolves_and_cannot_be_taken_twice() -> None:
    registry = HandlerRegistry()
    registry.handler("new_name", aliases=["old_name"])(fn)
    spec = registry.get("old_name")
    assert spec is not None and spec.type == "new_name"
    assert "old_name" in registry
    with pytest.raises(DuplicateHandlerError):
        registry.handler("old_name")(fn)


class Model(BaseModel):
    x: int


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"input": dict}, "input must be a pydantic model"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        HandlerRegistry().handler("t", **kwargs)(fn)


def test_options_are_kept() -> None:
    registry = HandlerRegistry()
    registry.handler("t", input=Model, max_attempts=7, timeout=12, backoff=Backoff.fixed(3))(fn)
    spec = registry.get("t")
    assert spec is not None
    assert (spec.input_model, spec.max_attempts, spec.timeout, spec.backoff.seconds(5)) == (
        Model,
        7,
        12,
        3,
    )


def test_exponential_backoff_grows_caps_and_jitters_downward() -> None:
    plain = Backoff.exponential(delay=2, factor=3, max_delay=50, jitter=False)
    assert [plain.seconds(n) for n in (1, 2, 3, 4)] == [2, 6, 18, 50]
    jittery = Backoff.exponential(delay=10, jitter=True)
    rng = random.Random(1)
    values = [jittery.seconds(1, rng) for _ in range(200)]
    assert all(5 <= v <= 10 for v in values)
    assert len(set(values)) > 100


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ConfigurationError):
        Backoff(kind="linear")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Backoff(delay=-1)


def test_builtin_handlers_load_and_unknown_modules_fail_clearly() -> None:
    load_handler_modules("")
    from jobs_lib.registry import default_registry

    assert "process_notifications" in default_registry
    with pytest.raises(
        ConfigurationError, match="cannot import handler module 'no_such_module_xyz'"
    ):
        load_handler_modules("no_such_module_xyz")
