"""The long fuzz run: `python -m bench.fuzz --documents 20000` runs tests/test_fuzz_documents.py
with that many documents.

The test command runs 700 (a fixed seed); this runs the same test, the same checks, with more,
and prints its figures: documents written, refused by Firestore, completed, failed with a
reason, cancelled, left as written, pending for the future, unsettled (stalls), function errors.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=20_000)
    args = parser.parse_args()
    env = {**os.environ, "JOBS_FUZZ_DOCUMENTS": str(args.documents)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "tests/test_fuzz_documents.py",
        "-o",
        "timeout=0",
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if line.startswith(("fuzz figures", "good jobs")) or "passed" in line or "failed" in line:
            print(line)
    raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
