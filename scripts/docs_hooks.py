"""mkdocs hooks: pages made from the code at build time, so they cannot drift from it.

- ``reference/cli.md``: every ``jobs`` command and option, from the Typer app itself.
- ``discussions/benchmarks.md``: ``bench/README.md`` (the figures live beside the code that
  measures them; the site shows the same file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent


def cli_reference() -> str:
    import typer
    import typer.cli

    from jobs_lib.cli import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command)
    body = typer.cli.get_docs_for_click(obj=command, ctx=ctx, name="jobs", title="Command line")
    intro = (
        "Every command of `jobs` (installed with the package; `python -m jobs_lib` is the same), "
        "generated from the command line's own definitions when the site is built. Each command "
        "takes the settings of [Settings](settings.md) from the environment.\n\n"
    )
    title, _, rest = body.partition("\n")
    return f"{title}\n\n{intro}{rest.lstrip()}"


def benchmarks() -> str:
    text = (ROOT / "bench" / "README.md").read_text()
    # Links in bench/README.md are relative to bench/; on the site they point at the pages.
    return re.sub(r"\]\(\.\./docs/([^)]+)\)", lambda m: f"](../{m.group(1)})", text)


def on_files(files: Files, config: Any) -> Files:
    for path, make in (
        ("reference/cli.md", cli_reference),
        ("discussions/benchmarks.md", benchmarks),
    ):
        files.append(File.generated(config, path, content=make()))
    return files
