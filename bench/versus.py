"""Before and after in one run: `python -m bench.versus --against REV`.

Checks REV (and `--after`, by default HEAD) out into temporary git worktrees,
so the checkout can change while it runs, and measures the same
throughput cells (bench/__main__.py `run_cell`: a fresh, warmed-up emulator
per cell, no-op jobs, jobs/s from first start to last completion) with that
tree and with this one, alternately (before, after, before, after, ...), so
both see the same machine at the same time, plus the functions path (the
emulator's created-events through functions-framework). Prints medians per
cell and writes bench/results/versus.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CELL = """
import json, sys
sys.path.insert(0, sys.argv[1])
from bench.__main__ import run_cell
print(json.dumps(run_cell("library", int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
"""
FUNCTIONS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from bench.__main__ import functions_path
print(json.dumps(functions_path(paced=int(sys.argv[2]), burst=int(sys.argv[3]), rate=25)))
"""


def measure(tree: Path, code: str, *args: str) -> Any:
    """Run one measurement in a process whose jobs_lib and bench come from `tree`."""
    result = subprocess.run(
        [sys.executable, "-c", code, str(tree), *args],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"measurement in {tree} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--against",
        required=True,
        help="the git revision to compare with (e.g. a commit before the change)",
    )
    parser.add_argument(
        "--after", default="HEAD", help="the revision to measure against it (default: HEAD)"
    )
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--functions", type=int, default=300, help="paced jobs through the functions path (0: skip)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobs-versus-") as tmp:
        before, after = Path(tmp) / "before", Path(tmp) / "after"
        for tree, rev in ((before, args.against), (after, args.after)):
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), rev],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        try:
            trees = {"before": before, "after": after}
            cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for workers in [int(w) for w in args.workers.split(",")]:
                for _ in range(args.repeats):
                    for name, tree in trees.items():
                        print(
                            f"{name}: {workers} worker(s), {args.backlog} jobs ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        cells.setdefault((name, workers), []).append(
                            measure(
                                tree, CELL, str(workers), str(args.backlog), str(args.concurrency)
                            )
                        )
            functions: dict[str, list[dict[str, Any]]] = {}
            if args.functions:
                for name, tree in trees.items():
                    print(f"{name}: functions path ...", file=sys.stderr, flush=True)
                    functions[name] = measure(
                        tree, FUNCTIONS, str(args.functions), str(args.functions)
                    )
        finally:
            for tree in (before, after):
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(tree)],
                    cwd=ROOT,
                    capture_output=True,
                )
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.against], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    after_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.after], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"\nbefore = {rev}, after = {after_rev}; {args.backlog} no-op jobs, concurrency "
        f"{args.concurrency}, {args.repeats} runs each, alternating\n"
    )
    print(
        "| workers | before jobs/s | after jobs/s | after/before | before reads/job | after "
        "reads/job | before writes/job | after writes/job |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        b, a = cells[("before", workers)], cells[("after", workers)]

        def med(runs: list[dict[str, Any]], key: str) -> float:
            return float(statistics.median(r[key] for r in runs))

        row = {
            "workers": workers,
            "before": [r["jobs_per_s"] for r in b],
            "after": [r["jobs_per_s"] for r in a],
            "ratio": med(a, "jobs_per_s") / med(b, "jobs_per_s"),
        }
        rows.append(row)
        print(
            f"| {workers} | {med(b, 'jobs_per_s'):.0f} "
            f"({', '.join(f'{x:.0f}' for x in row['before'])}) | {med(a, 'jobs_per_s'):.0f} "
            f"({', '.join(f'{x:.0f}' for x in row['after'])}) "
            f"| {100 * row['ratio']:.0f}% | {med(b, 'reads_per_job'):.2f} | "
            f"{med(a, 'reads_per_job'):.2f} | {med(b, 'writes_per_job'):.2f} | "
            f"{med(a, 'writes_per_job'):.2f} |"
        )
    if functions:
        print("\nFunctions path (jobs dev's pieces):\n")
        for name, result in functions.items():
            for line in result:
                print(f"  {name}: {line}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "versus.json").write_text(
        json.dumps(
            {
                "against": rev,
                "after": after_rev,
                "cells": {f"{k[0]}-{k[1]}": v for k, v in cells.items()},
                "functions": functions,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
