"""The long soak: `python -m bench.soak --minutes 30` prints and writes (bench/results/soak.json)
its figures.

See bench/soakrun.py for what runs and what is checked; tests/test_soak.py runs 45 seconds of it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.soakrun import Soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--per-minute", type=int, default=300, help="jobs created per minute")
    parser.add_argument(
        "--restart-every",
        type=float,
        default=120.0,
        help="seconds between restarts of the second worker",
    )
    parser.add_argument("--window", type=float, default=300.0, help="seconds per reported window")
    args = parser.parse_args()
    figures = Soak(
        seconds=args.minutes * 60,
        per_minute=args.per_minute,
        restart_every=args.restart_every,
        window=args.window,
    ).run()
    print(json.dumps(figures, indent=2))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
