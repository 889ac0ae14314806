"""Cold start of the functions: `python -m bench.coldstart` prints the import time of
functions/main.py beside the floor every function pays anyway (`functions_framework` and
`google.cloud.firestore`).

Each figure is the median of fresh interpreters started one after another, the variants alternating
so that the machine's load falls on all alike. ``FUNCTION_TARGET`` is set as Cloud Functions sets
it; jobs_lib is byte-compiled first, as pip compiles installed packages. With ``--against REV`` the
same is measured for functions/main.py at another commit (a git worktree), in the same run. Memory:
the peak RSS of an interpreter after the import."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, resource, sys, time
t = time.perf_counter()
{imports}
seconds = time.perf_counter() - t
watched = ("pydantic", "typer", "rich", "jobs_lib.api", "jobs_lib.worker", "firebase_functions")
print(json.dumps({{"seconds": seconds,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "loaded": sorted(m for m in watched if m in sys.modules)}}))
"""


def measure(python: str, root: Path, imports: str, target: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("FUNCTION_TARGET", "PYTHONPATH")}
    env["PYTHONPATH"] = str(root)
    if target:
        env["FUNCTION_TARGET"] = target
    out = subprocess.run(
        [python, "-c", PROBE.format(imports=imports)],
        cwd=root / "functions",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--against", help="a git revision whose functions/main.py to measure as well"
    )
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    variants: list[tuple[str, Path, str, str | None]] = [
        (
            "floor: functions_framework + google.cloud.firestore",
            ROOT,
            "import functions_framework, google.cloud.firestore",
            None,
        ),
        ("import main  (FUNCTION_TARGET=on_job_created)", ROOT, "import main", "on_job_created"),
        ("import main  (FUNCTION_TARGET=tick)", ROOT, "import main", "tick"),
        ("import main  (FUNCTION_TARGET=api)", ROOT, "import main", "api"),
    ]
    worktree = None
    if args.against:
        worktree = Path(tempfile.mkdtemp(prefix="jobs-coldstart-"))
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.against],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        variants.append(
            (
                f"import main at {args.against}  (FUNCTION_TARGET=on_job_created)",
                worktree,
                "import main",
                "on_job_created",
            )
        )
    # Bytecode as pip leaves it for installed packages (the floor's are compiled): this machine
    # sets PYTHONDONTWRITEBYTECODE, which would otherwise recompile jobs_lib in every interpreter.
    for root in {v[1] for v in variants}:
        subprocess.run(
            [
                args.python,
                "-m",
                "compileall",
                "-q",
                str(root / "jobs_lib"),
                str(root / "functions" / "main.py"),
            ],
            check=True,
        )
    try:
        samples: dict[str, list[dict[str, object]]] = {name: [] for name, *_ in variants}
        for _ in range(args.repeats):
            for name, root, imports, target in variants:
                samples[name].append(measure(args.python, root, imports, target))
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)],
                cwd=ROOT,
                capture_output=True,
            )
    floor = statistics.median(float(s["seconds"]) for s in samples[variants[0][0]])  # type: ignore[arg-type]
    fastest = min(float(s["seconds"]) for s in samples[variants[0][0]])  # type: ignore[arg-type]
    print(
        f"{args.repeats} fresh interpreters each ({args.python}): median and fastest (the least "
        f"disturbed by other load)"
    )
    print(
        f"{'what':<66} {'median s':>9} {'over floor':>11} {'fastest s':>10} {'over floor':>11} "
        f"{'RSS MB':>7}  loaded"
    )
    for name, *_ in variants:
        times = [float(s["seconds"]) for s in samples[name]]  # type: ignore[arg-type]
        seconds, least = statistics.median(times), min(times)
        rss = statistics.median(float(s["rss_mb"]) for s in samples[name])  # type: ignore[arg-type]
        loaded = samples[name][-1]["loaded"]
        print(
            f"{name:<66} {seconds:>9.3f} {seconds - floor:>+11.3f} {least:>10.3f} "
            f"{least - fastest:>+11.3f} {rss:>7.0f}  {', '.join(loaded) or '-'}"
        )  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
