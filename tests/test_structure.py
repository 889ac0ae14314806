"""The house rules a reviewer would otherwise check by hand: no import cycles inside jobs_lib,
no environment reads outside its configuration module, the settings table in the docs."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs_lib.config import Settings, documented, settings_table

from .conftest import ROOT

PACKAGE = ROOT / "jobs_lib"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Every jobs_lib module `name` imports: at the top, inside functions, under TYPE_CHECKING,
    and through importlib.import_module with a literal."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            targets = [str(node.args[0].value)]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            # Importing a submodule runs its parents' __init__ too, but a parent package is not a
            # dependency of its own submodules unless they import a name from it.
            if (
                target
                and target != name
                and not (name.startswith(target + ".") and target == "jobs_lib")
            ):
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_inside_jobs_lib() -> None:
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    assert len(graph) > 40 and graph["jobs_lib.engine.runner"] >= {
        "jobs_lib.store",
        "jobs_lib.model.decisions",
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def folder_of(module: str) -> str:
    """The folder a module lives in (``engine``, ``store``...), or ``top`` for the package's top
    level."""
    parts = module.split(".")
    return (
        parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "top"
    )


#: Which folders each folder may import (besides itself): arrows run one way, from the entry points
#: down to the model. ``errors`` and ``config`` are leaves everyone may use.
MAY_IMPORT = {
    "model": set(),
    "store": {"model"},
    "observability": {"model"},
    "limits": {"model", "store", "observability", "registry"},
    "engine": {"model", "store", "limits", "observability", "registry", "context", "builtin"},
}
#: Arrows that run back up today, each a seam to mend rather than a rule to relax.
KNOWN_UPWARD = {
    # The schedule firer creates a schedule's job through the client's enqueue.
    ("jobs_lib.engine.schedules", "jobs_lib.client"),
}


def test_folders_import_downwards_only() -> None:
    leaves = {"jobs_lib", "jobs_lib.errors", "jobs_lib.config"}
    wrong = []
    for name, path in MODULES.items():
        folder = folder_of(name)
        if folder not in MAY_IMPORT:
            continue
        for target in imports_of(name, path):
            to = folder_of(target)
            top_name = target.split(".")[1] if target.count(".") == 1 else None
            allowed = to == folder or to in MAY_IMPORT[folder] or top_name in MAY_IMPORT[folder]
            if target not in leaves and not allowed and (name, target) not in KNOWN_UPWARD:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layering (docs/reference/layout.md):\n" + "\n".join(
        sorted(wrong)
    )
    assert folder_of("jobs_lib.engine.runner") == "engine" and folder_of("jobs_lib.client") == "top"


#: What only the store may touch: Firestore's client and types, Google's API errors and status
#: codes, the raw protobuf writer, listeners and the server-timestamp sentinel.
STORE_ONLY = re.compile(
    r"^\s*(from|import) (google\.cloud\.firestore|google\.api_core\.exceptions|google\.events"
    r"|google\.rpc|grpc\b|jobs_lib\.store\.wire)|\bon_snapshot\(|\bSERVER_TIMESTAMP\b"
    r"|\b(JobStore|ScheduleStore|Connection)\((?!connection=)"
)


def test_the_store_is_sealed() -> None:
    """Documents are decoded and encoded in the store; no Google type or code outside it; stores
    are built by the one assembly (`jobs_lib.app.App`) and handed to the parts."""
    offenders = []
    for name, path in MODULES.items():
        if name.startswith("jobs_lib.store") or name == "jobs_lib.app":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if STORE_ONLY.search(line) and not line.lstrip().startswith(("#", "class ")):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "only jobs_lib.store may do this:\n" + "\n".join(offenders)
    assert STORE_ONLY.search("from google.cloud.firestore_v1 import Query")  # the check bites
    assert STORE_ONLY.search("    store = JobStore(settings)")
    assert not STORE_ONLY.search("JobStore(connection=self.connection)")


#: Exceptions that never leave the code that raises and catches them (errors.py names them).
INTERNAL_SIGNALS = {"InvalidInput", "DeliveryFailed", "TokenTaken", "Suspend", "_PortTaken"}


def test_every_error_lives_in_the_tree() -> None:
    from jobs_lib import errors

    outside = []
    for name, path in MODULES.items():
        if name == "jobs_lib.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if bases & {"Exception", "BaseException"} or any(
                    b.endswith("Error") for b in bases
                ):
                    outside.append(node.name)
    assert set(outside) <= INTERNAL_SIGNALS, f"errors outside jobs_lib/errors.py: {outside}"
    for signal in INTERNAL_SIGNALS - {"_PortTaken"}:
        assert signal in (errors.__doc__ or ""), f"errors.py does not name {signal}"


ENV_READS = re.compile(r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bfrom os import\b.*\benviron\b")


def test_only_the_configuration_module_touches_the_environment() -> None:
    offenders = []
    for name, path in MODULES.items():
        if name == "jobs_lib.config":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ENV_READS.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "read settings through jobs_lib.config.Settings:\n" + "\n".join(offenders)
    assert ENV_READS.search('x = os.environ.get("A")') and ENV_READS.search(
        "os.getenv('A')"
    )  # the check itself bites


SETTINGS_PAGE = ROOT / "docs" / "reference" / "settings.md"


def readme_settings() -> dict[str, tuple[str, str]]:
    """The docs' settings table: variable -> (setting, default)."""
    text = SETTINGS_PAGE.read_text()
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([a-z_]+)` \| ([^|]+) \|", text, flags=re.M)
    return {env: (name, default.strip().strip("`")) for env, name, default in rows}


def test_the_docs_document_every_setting_and_only_those() -> None:
    documented_rows = readme_settings()
    assert len(documented_rows) >= 15
    wanted = {s.env: s.name for s in documented()}
    assert {env: name for env, (name, _d) in documented_rows.items()} == wanted
    assert settings_table() in SETTINGS_PAGE.read_text(), (
        "regenerate the table: jobs settings --markdown"
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "JOBS_TICK_BUDGET",
            "soon",
            "JOBS_TICK_BUDGET must be seconds, 1 to 3600; got 'soon': not a number",
        ),
        (
            "JOBS_TICK_BUDGET",
            "0",
            "JOBS_TICK_BUDGET (tick_budget) must be seconds, 1 to 3600; got 0.0: out of range",
        ),
        (
            "JOBS_TICK_CONCURRENCY",
            "2.5",
            "JOBS_TICK_CONCURRENCY must be an integer, 1 to 1000; got '2.5': not an integer",
        ),
        (
            "JOBS_TIMESTAMPS",
            "unix",
            "JOBS_TIMESTAMPS (timestamps) must be `timestamp` or `iso`; got 'unix'",
        ),
        (
            "JOBS_LOG_LEVEL",
            "loud",
            "JOBS_LOG_LEVEL (log_level) must be DEBUG, INFO, WARNING, ERROR or CRITICAL; got "
            "'LOUD'",
        ),
        (
            "JOBS_CLEANUP_CRON",
            "every hour",
            "JOBS_CLEANUP_CRON (cleanup_cron) must be a cron expression, or `off`",
        ),
        ("JOBS_COLLECTION", "a/b", "JOBS_COLLECTION (collection) must be a collection id"),
    ],
)
def test_a_bad_setting_names_its_variable_and_what_it_accepts(
    variable: str, value: str, message: str
) -> None:
    from jobs_lib.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value).startswith(message), str(raised.value)


def test_settings_read_every_variable_and_pass_them_to_children() -> None:
    env = {
        "GCLOUD_PROJECT": "demo-other",
        "JOBS_DATABASE": "jobs",
        "JOBS_HANDLERS": "a.b, c",
        "JOBS_TICK_BUDGET": "20",
        "JOBS_API_CREATE_LIMIT": "5",
        "JOBS_CLEANUP_CRON": "off",
        "JOBS_LOG_LEVEL": "debug",
        "JOBS_TIMESTAMPS": "iso",
    }
    settings = Settings.from_env(env)
    assert (settings.project, settings.database, settings.handlers, settings.tick_budget) == (
        "demo-other",
        "jobs",
        ("a.b", "c"),
        20.0,
    )
    assert (
        settings.api_create_limit,
        settings.cleanup_cron,
        settings.log_level,
        settings.timestamps,
    ) == (5, None, "DEBUG", "iso")
    assert (
        Settings.from_env(settings.environment()) == settings
    )  # a child process sees the same settings
    assert Settings.from_env({}) == Settings()


def test_the_connection_retries_transient_errors_and_then_says_unavailable() -> None:
    """A transient error is retried (and is no answer for readiness); one that lasts past the budget
    is `StoreUnavailable`."""
    from google.api_core import exceptions as gexc

    from jobs_lib.errors import StoreUnavailable
    from jobs_lib.store import Connection

    connection = Connection(Settings(), db=object())
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise gexc.ServiceUnavailable("connection refused")
        return "answered"

    assert connection.retrying(flaky, budget=5) == "answered" and len(calls) == 3
    assert connection.last_answer is not None
    connection.last_answer = None

    def down() -> str:
        raise gexc.ServiceUnavailable("connection refused")

    with pytest.raises(StoreUnavailable):
        connection.retrying(down, budget=0.5)
    assert connection.last_answer is None  # failures are not answers


def test_a_function_instance_loads_only_what_its_function_needs() -> None:
    """Cold start (bench/coldstart.py measures it): the created-event and the tick never import the
    API, pydantic, typer or rich; the worker loop only where a tick runs it."""
    probe = (
        "import json, sys, main; print(json.dumps(sorted(m for m in ('pydantic', "
        "'typer', 'rich', 'jobs_lib.api', 'jobs_lib.worker', 'jobs_lib.cli', "
        "'firebase_functions') if m in sys.modules)))"
    )
    loaded = {}
    for target in ("on_job_created", "tick", "api"):
        env = {k: v for k, v in os.environ.items() if k != "FUNCTION_TARGET"}
        env.update(FUNCTION_TARGET=target, PYTHONPATH=str(ROOT))
        result = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT / "functions",
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        loaded[target] = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"on_job_created": [], "tick": [], "api": []}, loaded
