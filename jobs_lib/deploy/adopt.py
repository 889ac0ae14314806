"""`jobs init`: add jobs_lib to an existing Firebase project, or make a new one.

What it changes in a project directory (the one with ``firebase.json``):

* ``firebase.json``: a Python codebase for jobs_lib beside the project's own (a ``functions`` object
  becomes a list, the project's codebase first and unchanged), the Firestore rules and indexes files
  if the project names none, and the emulators jobs_lib runs on (firestore, functions, auth) where
  the project sets none.
* the codebase folder: ``main.py`` (jobs_lib's entry points), ``handlers.py`` (a module to start
  from), ``requirements.txt``, ``.env`` (``JOBS_HANDLERS``, ``JOBS_DATABASE``). Files that exist are
  left as they are.
* ``firestore.indexes.json``: jobs_lib's composite indexes and field overrides that are not there
  yet. Nothing of the project's is removed; a field override of the project's on one of jobs_lib's
  fields is kept and reported as a conflict.
* ``firestore.rules``: jobs_lib's rules in a marked block of their own (a second
  ``match /databases/{database}/documents``, with its own functions), before the end of
  ``service cloud.firestore``. A later `jobs init` rewrites that block in place and keeps its
  knobs section (the job types clients may create, ...). The project's own match blocks are not
  touched.

Firestore grants a request when any matching rule allows it, so jobs_lib's block can only open
paths it matches: its own collections. Two things refuse the merge, with nothing written: a rule of
the project's that already grants access to one of jobs_lib's collections (a catch-all such as
``match /{document=**} { allow read, write: if request.auth != null; }`` would let clients write
jobs around jobs_lib's rules), and a rules file that is not ``rules_version = '2'`` (switching the
version changes what the project's recursive wildcards match). A file that cannot be parsed refuses
too. Running `jobs init` twice changes nothing the second time.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs_lib.deploy.commands import ROOT
from jobs_lib.errors import InitRefused
from jobs_lib.store.jobs import STEPS_SUBCOLLECTION

BEGIN = (
    "// >>> jobs_lib: written by `jobs init`, which rewrites this block; edit only its knobs >>>"
)
END = "// <<< jobs_lib <<<"
KNOBS = "// ---- the knobs an app edits"
SECTION = "// ----"

JOBS = "backgroundJobs"
SCHEDULES = "scheduledJobs"
#: The side collections jobs_lib keeps beside the jobs (``backgroundJobs_<name>``): server-only.
#: tests/test_adopt.py checks this list against the collections the store modules name.
SIDE_COLLECTIONS = ("control", "fair", "partitions", "rateLimits", "rateTokens", "slots", "stats")
IGNORE = ["venv", ".venv", "__pycache__", "*.pyc", ".git", "*.local"]
RUNTIME = "python312"
EMULATORS = {"firestore": 8080, "functions": 5001, "auth": 9099}

MAIN_PY = '''"""Cloud Functions of this codebase: jobs_lib's entry points (written by `jobs init`).

functions-framework serves `on_job_created`, `tick` and `api` from here; the Firebase CLI finds the
firebase-functions SDK declarations `jobs_created`, `jobs_tick` and `jobs_api`. Add your own
functions below.
"""

from jobs_lib.deploy.entrypoints import *  # noqa: F403 - both toolchains look them up by name
'''

HANDLERS_PY = '''"""This project's job handlers (written by `jobs init`; .env names them).

One handler per job type. A client (web or mobile, signed in) may create a job of a type only once
firestore.rules lists it in clientJobTypes(), inside the jobs_lib block's knobs; servers enqueue any
type with jobs_lib.JobsClient or the REST API.
"""

from __future__ import annotations

from typing import Any

import jobs_lib.builtin.notifications  # noqa: F401 - process_notifications, which the rules allow
from jobs_lib import JobContext, handler


@handler("hello", max_attempts=3, timeout=60)
def hello(ctx: JobContext[Any]) -> dict[str, str]:
    """An example to copy: its result is written to the job document's `result`."""
    name = ctx.metadata.get("name", "world")
    ctx.progress(100, "greeted")
    return {"greeting": f"Hello, {name}!"}
'''

GITIGNORE = (
    "venv/\n__pycache__/\n# `jobs functions-package` copies jobs_lib here to deploy\njobs_lib/\n"
)


@dataclass(frozen=True)
class FileChange:
    """One file `jobs init` writes: its text before (None: a new file) and after."""

    path: Path
    before: str | None
    after: str

    def diff(self, root: Path) -> str:
        """A unified diff of the change, with paths relative to the project."""
        name = self.path.relative_to(root).as_posix()
        return "".join(
            difflib.unified_diff(
                (self.before or "").splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile="/dev/null" if self.before is None else f"a/{name}",
                tofile=f"b/{name}",
            )
        )


@dataclass
class InitPlan:
    """What `jobs init` will do to a project: the files, and what to tell its owner."""

    root: Path
    changes: list[FileChange] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    def write(self, path: Path, after: str, what: str) -> None:
        """Plan `path` to hold `after` (nothing, when it already does)."""
        before = path.read_text() if path.exists() else None
        if before != after:
            self.changes.append(FileChange(path, before, after))
            self.done.append(what)

    def apply(self) -> None:
        """Write every planned file (their folders made as needed)."""
        for change in self.changes:
            change.path.parent.mkdir(parents=True, exist_ok=True)
            change.path.write_text(change.after)

    def diff(self) -> str:
        """Every planned change as one unified diff (what ``--dry-run`` prints)."""
        return "".join(change.diff(self.root) for change in self.changes)


# -- firestore.rules -------------------------------------------------------------------------------
#
# Written by hand: no Python library reads Firestore's rules language. This scanner knows only what
# the merge needs: comments, strings, `match`/`function`/`service` blocks (a path's `{wildcard}` is
# not a block), braces inside expressions (map literals) and `allow` statements. The emulator's
# compiler is the judge of the result (tests/test_adopt.py loads every merged file into it).


@dataclass
class _Block:
    kind: str  # "file", "service", "match" or "function"
    head: str
    start: int  # index of the first character of its head
    close: int = -1  # index of its closing brace
    line: int = 1
    children: list[_Block] = field(default_factory=list)
    allows: list[tuple[int, str]] = field(default_factory=list)  # (line, statement)
    statements: list[str] = field(default_factory=list)  # other statements (rules_version)

    @property
    def path(self) -> list[str]:
        """A match block's own path segments."""
        return [s for s in self.head.split(None, 1)[1].strip().split("/") if s]


def _blank_comments(text: str) -> str:
    """`text` with every comment replaced by spaces (newlines kept): indexes and lines stay put."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise InitRefused(f"a /* comment is never closed (line {_line(text, i)})")
            j += 2
        elif text[i] in "'\"":
            j = i + 1
            while j < n and text[j] != text[i] and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            if j >= n or text[j] != text[i]:
                raise InitRefused(f"a string is never closed (line {_line(text, i)})")
            i = j + 1
            continue
        else:
            i += 1
            continue
        for k in range(i, j):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out)


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _skip_string(code: str, i: int) -> int:
    j = i + 1
    while code[j] != code[i]:
        j += 2 if code[j] == "\\" else 1
    return j + 1


def parse_rules(text: str) -> _Block:
    """The block tree of a rules file; raises `InitRefused` when its braces do not balance."""
    code = _blank_comments(text)
    root = _Block("file", "", 0)
    stack = [root]
    statement = 0  # where the current statement's text starts
    depth = 0  # braces of expressions (map literals) in the current statement
    i, n = 0, len(code)
    while i < n:
        ch = code[i]
        if ch in "'\"":
            i = _skip_string(code, i)
            continue
        head = " ".join(code[statement:i].split())
        word = head.split(" ", 1)[0]
        if ch == "{":
            if depth == 0 and word == "match" and code[i - 1] == "/":  # a path's {wildcard}
                close = code.find("}", i)
                if close < 0:
                    break
                i = close + 1
                continue
            if depth == 0 and word in ("service", "match", "function"):
                at = statement + len(code[statement:i]) - len(code[statement:i].lstrip())
                block = _Block(word, head, at, line=_line(text, i))
                stack[-1].children.append(block)
                stack.append(block)
                statement = i + 1
            else:
                depth += 1
        elif ch == "}":
            if depth:
                depth -= 1
            else:
                if len(stack) == 1:
                    raise InitRefused(f"a '}}' closes nothing (line {_line(text, i)})")
                stack.pop().close = i
                statement = i + 1
        elif ch == ";" and depth == 0:
            if word == "allow":
                stack[-1].allows.append(
                    (_line(text, statement + code[statement:i].find("a")), head)
                )
            elif head:
                stack[-1].statements.append(head)
            statement = i + 1
        i += 1
    if len(stack) > 1:
        raise InitRefused(f"a '{{' is never closed (line {stack[-1].line})")
    return root


def _walk(block: _Block, prefix: list[str]) -> Iterator[tuple[_Block, list[str]]]:
    for child in block.children:
        if child.kind == "match":
            path = prefix + child.path
            yield child, path
            yield from _walk(child, path)
        elif child.kind == "service":
            yield from _walk(child, prefix)


def _matches(pattern: list[str], path: tuple[str, ...]) -> bool:
    """Whether a rules path pattern (rules_version 2) matches a document path."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head.startswith("{") and head.endswith("=**}"):
        return any(_matches(rest, path[k:]) for k in range(len(path) + 1))
    if not path:
        return False
    if (head.startswith("{") and head.endswith("}")) or head == path[0]:
        return _matches(rest, path[1:])
    return False


def _grants(statement: str) -> bool:
    """Whether an `allow` statement may grant anything (only `if false` never does)."""
    _, _, condition = statement.partition(":")
    condition = condition.strip()
    return not condition or " ".join(condition.split()) not in ("if false", "if (false)")


def protected_paths() -> list[tuple[str, ...]]:
    """A document path in each of jobs_lib's collections (rules granted there would bypass
    jobs_lib's)."""
    return [
        (JOBS, "job"),
        (JOBS, "job", STEPS_SUBCOLLECTION, "step"),
        (SCHEDULES, "schedule"),
        *((f"{JOBS}_{name}", "doc") for name in SIDE_COLLECTIONS),
    ]


def _documents_path(path: list[str]) -> list[str] | None:
    """A match path below ``/databases/{database}/documents``, or None for one elsewhere."""
    if len(path) >= 3 and path[0] == "databases" and path[2] == "documents":
        return path[3:]
    return None


def rules_block(template: str | None = None, knobs: str | None = None) -> str:
    """jobs_lib's rules as the marked block `jobs init` writes (indented for a service block):
    the documents match of the repository's firestore.rules, without its deny-all (Firestore denies
    what no rule allows), with `knobs` in place of the template's own."""
    text = template if template is not None else (ROOT / "firestore.rules").read_text()
    tree = parse_rules(text)
    documents = next(
        (block for block, path in _walk(tree, []) if _documents_path(path) == []), None
    )
    if documents is None:
        raise InitRefused("jobs_lib's firestore.rules has no match /databases/{database}/documents")
    start = text.rfind("\n", 0, documents.start) + 1
    body = text[start : documents.close + 1]
    for child in documents.children:
        if child.kind == "match" and child.path == ["{document=**}"]:
            cut_from = text.rfind("\n", 0, child.start) + 1
            above = text.rfind("\n", 0, cut_from - 1) + 1
            if text[above:cut_from].strip().startswith("//"):
                cut_from = above
            cut_to = text.find("\n", child.close) + 1
            body = text[start:cut_from].rstrip() + "\n" + text[cut_to : documents.close + 1]
    if knobs is not None:
        body = _replace_knobs(body, knobs)
    lines = [
        BEGIN,
        "// jobs_lib's collections: clients may create and read their own jobs (backgroundJobs)",
        "// and schedules (scheduledJobs) as below; nothing of backgroundJobs_* or a job's steps.",
        "// Runner writes go through the Admin SDK, which these rules do not bind.",
        *textwrap.dedent(body).splitlines(),
        END,
    ]
    return "\n".join(f"  {line}" if line else "" for line in lines) + "\n"


def _knobs(block: str) -> str | None:
    """The knobs section of a jobs_lib block: from its heading to the next section's, as written."""
    start = block.find(KNOBS)
    if start < 0:
        return None
    start = block.rfind("\n", 0, start) + 1
    end = block.find(SECTION, block.find("\n", start))
    end = block.rfind("\n", 0, end) + 1 if end >= 0 else len(block)
    return block[start:end]


def _replace_knobs(block: str, knobs: str) -> str:
    old = _knobs(block)
    if old is None:
        return block
    indent = re.match(r"\s*", old).group(0)  # type: ignore[union-attr]
    theirs = re.match(r"\s*", knobs).group(0)  # type: ignore[union-attr]
    moved = "".join(
        (indent + line[len(theirs) :] if line.startswith(theirs) else line)
        for line in knobs.splitlines(keepends=True)
    )
    return block.replace(old, moved, 1)


def _marked(text: str) -> tuple[int, int] | None:
    """The span of the jobs_lib block in a rules file (its whole lines), or None."""
    begin = [m.start() for m in re.finditer(re.escape(BEGIN), text)]
    end = [m.end() for m in re.finditer(re.escape(END), text)]
    if not begin and not end:
        return None
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        raise InitRefused(
            "firestore.rules has a broken jobs_lib block (its begin and end markers must each "
            "appear once, in that order): restore them, or delete the block, and run jobs init "
            "again"
        )
    start = text.rfind("\n", 0, begin[0]) + 1
    stop = text.find("\n", end[0])
    return start, len(text) if stop < 0 else stop + 1


def merge_rules(text: str | None, name: str = "firestore.rules") -> tuple[str, str]:
    """Their rules with jobs_lib's block added (or rewritten in place), and what was done; raises
    `InitRefused` when the merge cannot be safe."""
    if text is None or not text.strip():
        block = rules_block()
        return (
            f"rules_version = '2';\n\nservice cloud.firestore {{\n{block}}}\n",
            f"{name}: written with jobs_lib's rules (there were none)",
        )
    tree = parse_rules(text)
    version = next(
        (s for s in tree.statements if s.replace(" ", "").startswith("rules_version=")), None
    )
    if version is None or version.split("=", 1)[1].strip().strip("'\"") != "2":
        raise InitRefused(
            f"{name} is not rules_version = '2' (jobs_lib's rules need version 2, and switching "
            f"changes what your recursive wildcards match): add rules_version = '2'; at its top "
            f"after checking your rules, then run jobs init again"
        )
    services = [b for b in tree.children if b.kind == "service"]
    firestore = [b for b in services if b.head.split()[1:] == ["cloud.firestore"]]
    if len(firestore) != 1:
        raise InitRefused(f"{name} must have one `service cloud.firestore {{ ... }}` block")
    marked = _marked(text)
    for match, path in _walk(tree, []):
        if marked and marked[0] <= match.start < marked[1]:
            continue
        below = _documents_path(path)
        if below is None:
            continue
        for line, statement in match.allows:
            if not _grants(statement):
                continue
            for target in protected_paths():
                if _matches(below, target):
                    raise InitRefused(
                        f"{name}:{line}: `{statement}` in match /{'/'.join(path)} grants access to "
                        f"jobs_lib's collection {target[0]}, which would let clients write jobs "
                        f"around jobs_lib's rules: narrow that match (list your collections, or "
                        f"exclude {JOBS}, {JOBS}_* and {SCHEDULES}), then run jobs init again"
                    )
    if marked:
        old = text[marked[0] : marked[1]]
        knobs = _knobs(old)
        block = rules_block(knobs=knobs)
        after = text[: marked[0]] + block + text[marked[1] :]
        kept = " (kept its knobs)" if knobs is not None else ""
        return after, f"{name}: rewrote the jobs_lib block{kept}"
    close = firestore[0].close
    at = text.rfind("\n", 0, close) + 1
    if text[at:close].strip():  # the service's brace shares a line with a rule: break it
        text, close = text[:close] + "\n" + text[close:], close + 1
        at = close
    after = text[:at].rstrip("\n") + "\n\n" + rules_block() + text[at:]
    return after, f"{name}: added the jobs_lib block (your own rules are unchanged)"


# -- firestore.indexes.json ------------------------------------------------------------------------


def _index_key(index: dict[str, Any]) -> str:
    return json.dumps(
        [
            index.get("collectionGroup"),
            index.get("queryScope", "COLLECTION"),
            index.get("fields", []),
        ],
        sort_keys=True,
    )


def _override_value(override: dict[str, Any]) -> str:
    indexes = sorted(json.dumps(i, sort_keys=True) for i in override.get("indexes", []))
    return json.dumps([indexes, bool(override.get("ttl", False))])


def merge_indexes(
    theirs: dict[str, Any], ours: dict[str, Any], name: str
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Their indexes file with jobs_lib's added: the merged object, what was done, conflicts."""
    merged = copy.deepcopy(theirs)
    indexes = merged.setdefault("indexes", [])
    have = {_index_key(i) for i in indexes}
    added = [i for i in ours.get("indexes", []) if _index_key(i) not in have]
    indexes.extend(copy.deepcopy(added))
    overrides = merged.setdefault("fieldOverrides", [])
    by_field = {(o.get("collectionGroup"), o.get("fieldPath")): o for o in overrides}
    conflicts, added_overrides = [], 0
    for override in ours.get("fieldOverrides", []):
        key = (override.get("collectionGroup"), override.get("fieldPath"))
        if key not in by_field:
            overrides.append(copy.deepcopy(override))
            added_overrides += 1
        elif _override_value(by_field[key]) != _override_value(override):
            conflicts.append(
                f"{name}: your field override on {key[0]}.{key[1]} differs from jobs_lib's; yours "
                f"is kept. jobs_lib's is {json.dumps(override, sort_keys=True)}"
            )
    done = []
    if added or added_overrides:
        done.append(
            f"{name}: added {len(added)} of jobs_lib's {len(ours.get('indexes', []))} composite "
            f"indexes and {added_overrides} field overrides (all of yours are kept)"
        )
    return merged, done, conflicts


# -- firebase.json ---------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InitRefused(
            f"{path.name} cannot be parsed ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            f"nothing was changed"
        ) from None


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


def _firestore_entry(config: dict[str, Any], database: str | None) -> dict[str, Any]:
    """The firebase.json ``firestore`` entry of the database jobs_lib uses (added if none)."""
    entries = config.get("firestore")
    if entries is None:
        entry: dict[str, Any] = {} if database in (None, "(default)") else {"database": database}
        config["firestore"] = entry
        return entry
    listed: list[dict[str, Any]] = entries if isinstance(entries, list) else [entries]
    names = [e.get("database", "(default)") for e in listed]
    if database is None:
        if len(listed) > 1:
            raise InitRefused(
                f"firebase.json configures several Firestore databases ({', '.join(names)}): "
                f"choose one with --database"
            )
        return listed[0]
    if database not in names:
        raise InitRefused(
            f"firebase.json configures the Firestore database(s) {', '.join(names)}, not "
            f"{database!r}: add an entry for it, or choose one of those with --database"
        )
    return listed[names.index(database)]


def _codebase(config: dict[str, Any], source: str, codebase: str) -> str | None:
    """Add jobs_lib's codebase to ``functions``; what was done, or None when it is there."""
    functions = config.get("functions")
    entries = [] if functions is None else functions if isinstance(functions, list) else [functions]
    for entry in entries:
        same_source = entry.get("source") == source
        same_name = entry.get("codebase", "default") == codebase
        if same_source and same_name:
            return None
        if same_source or same_name:
            raise InitRefused(
                f"firebase.json already has a functions codebase "
                f"{entry.get('codebase', 'default')!r} with source {entry.get('source')!r}: "
                f"choose another --codebase and --source for jobs_lib"
            )
    entries.append(
        {"source": source, "codebase": codebase, "runtime": RUNTIME, "ignore": list(IGNORE)}
    )
    config["functions"] = entries
    return f"added the Python codebase {codebase!r} (source {source}/)"


def _env_text(before: str | None, wanted: dict[str, str]) -> str:
    text = before or "# Settings the functions read (see docs/reference/settings.md).\n"
    present = {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line}
    missing = [f"{key}={value}\n" for key, value in wanted.items() if key not in present]
    if missing and not text.endswith("\n"):
        text += "\n"
    return text + "".join(missing)


def plan(
    root: Path,
    *,
    source: str = "jobs",
    codebase: str = "jobs",
    database: str | None = None,
    new: bool = False,
) -> InitPlan:
    """What `jobs init` does to the project at `root`; raises `InitRefused` (nothing planned) when
    it cannot merge safely. `new` makes a project from nothing in `root` (which must be empty)."""
    root = root.resolve()
    result = InitPlan(root)
    config_path = root / "firebase.json"
    if new:
        if root.exists() and any(root.iterdir()):
            raise InitRefused(
                f"{root} is not empty: jobs init --new makes a project in a new folder"
            )
        config: dict[str, Any] = {}
        before_config: Any = None
    else:
        if not config_path.is_file():
            raise InitRefused(
                f"no firebase.json in {root}: run jobs init in your Firebase project's folder, or "
                f"jobs init --new DIR to make a new project"
            )
        before_config = _read_json(config_path)
        if not isinstance(before_config, dict):
            raise InitRefused("firebase.json must hold a JSON object")
        config = copy.deepcopy(before_config)

    entry = _firestore_entry(config, database)
    database = entry.get("database", "(default)")
    suffix = "" if database == "(default)" else f".{database}"
    entry.setdefault("rules", f"firestore{suffix}.rules")
    entry.setdefault("indexes", f"firestore{suffix}.indexes.json")
    codebase_note = _codebase(config, source, codebase)
    emulators = config.setdefault("emulators", {})
    for name, port in EMULATORS.items():
        emulators.setdefault(name, {"host": "127.0.0.1", "port": port})
    if new:
        emulators.setdefault("ui", {"enabled": False})
        emulators.setdefault("singleProjectMode", True)

    # Rules and indexes first: a refusal there must leave everything unwritten.
    rules_path = root / entry["rules"]
    rules_before = rules_path.read_text() if rules_path.exists() else None
    rules_after, rules_note = merge_rules(rules_before, entry["rules"])
    indexes_path = root / entry["indexes"]
    theirs = _read_json(indexes_path) if indexes_path.exists() else {}
    if not isinstance(theirs, dict):
        raise InitRefused(f"{entry['indexes']} must hold a JSON object")
    ours = json.loads((ROOT / "firestore.indexes.json").read_text())
    merged, index_notes, conflicts = merge_indexes(theirs, ours, entry["indexes"])

    if config != before_config:
        result.write(
            config_path,
            _dump(config),
            "firebase.json: " + _config_summary(before_config or {}, config, codebase_note),
        )
    result.write(rules_path, rules_after, rules_note)
    if merged != theirs or not indexes_path.exists():
        result.write(
            indexes_path, _dump(merged), (index_notes or [f"{entry['indexes']}: written"])[0]
        )
    result.conflicts += conflicts

    folder = root / source
    main = folder / "main.py"
    if main.exists() and "jobs_lib.deploy.entrypoints" not in main.read_text():
        raise InitRefused(
            f"{source}/main.py exists and is not jobs_lib's: choose another folder with --source"
        )
    requirements = (ROOT / "functions" / "requirements.txt").read_text()
    for name, text in (
        ("main.py", MAIN_PY),
        ("handlers.py", HANDLERS_PY),
        ("requirements.txt", requirements),
        (".gitignore", GITIGNORE),
    ):
        path = folder / name
        if not path.exists():
            result.write(path, text, f"{source}/{name}: written")
    env = folder / ".env"
    wanted = {"JOBS_HANDLERS": "handlers"}
    if database != "(default)":
        wanted["JOBS_DATABASE"] = database
    env_before = env.read_text() if env.exists() else None
    result.write(env, _env_text(env_before, wanted), f"{source}/.env: {', '.join(wanted)} set")

    result.todo += _todo(source, codebase, database, entry["rules"])
    return result


def _config_summary(before: dict[str, Any], after: dict[str, Any], codebase: str | None) -> str:
    parts = []
    if codebase:
        parts.append(codebase)
    if before.get("firestore") != after.get("firestore"):
        parts.append("named the Firestore rules and indexes files")
    added = sorted(set(after.get("emulators", {})) - set(before.get("emulators", {})))
    if added:
        parts.append(f"added emulator settings ({', '.join(added)})")
    return "; ".join(parts) or "updated"


def _todo(source: str, codebase: str, database: str, rules: str) -> list[str]:
    db = "" if database == "(default)" else f" --database={database}"
    return [
        f"Edit {source}/handlers.py (your job types) and clientJobTypes() in {rules}'s jobs_lib "
        f"block (the types signed-in clients may create).",
        f"Make the virtualenv the Firebase CLI loads Python functions from: "
        f"jobs functions-venv {source}",
        "Run it locally: firebase emulators:start --only firestore,functions,auth",
        f"Deploy: jobs functions-package {source} (copies jobs_lib into {source}/), then "
        f"firebase deploy --only firestore,functions:{codebase} (your rules and indexes file "
        f"now hold jobs_lib's too).",
        f"Once per project, the TTL policy that deletes finished jobs: gcloud firestore fields "
        f"ttls update expireAt --collection-group={JOBS} --enable-ttl{db} (and the same for "
        f"{JOBS}_rateTokens, {JOBS}_rateLimits and {JOBS}_stats).",
    ]


__all__ = [
    "BEGIN",
    "END",
    "FileChange",
    "InitPlan",
    "InitRefused",
    "merge_indexes",
    "merge_rules",
    "parse_rules",
    "plan",
    "protected_paths",
    "rules_block",
]
