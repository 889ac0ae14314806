"""The documentation site: built from the repository offline with warnings as errors, every page
reachable from the index, the README short and its links alive, no reference to files that are
not in the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and ((tag == "a" and name == "href") or (tag == "img" and name == "src")):
                self.links.append(value)


def links_of(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text())
    return parser.links


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.fail(
            "mkdocs is not installed: run scripts/bootstrap (pip install -e '.[dev]' installs "
            "mkdocs-material and mkdocstrings-python)"
        )
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def test_every_page_is_reachable_from_the_index_and_every_link_resolves(site: Path) -> None:
    pages = {p for p in site.rglob("*.html") if p.name != "404.html"}
    assert len(pages) >= 25
    seen: set[Path] = set()
    todo = [site / "index.html"]
    broken: list[str] = []
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for link in links_of(page):
            target, _fragment = urldefrag(link)
            if not target or re.match(r"^[a-z]+:", target):
                continue  # a same-page anchor, or http(s):, mailto:
            resolved = Path(urljoin(page.as_uri(), target).removeprefix("file://"))
            if resolved.is_dir():
                resolved = resolved / "index.html"
            if not resolved.exists():
                broken.append(f"{page.relative_to(site)} -> {link}")
            elif resolved.suffix == ".html":
                todo.append(resolved)
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert pages - seen == set(), (
        f"pages not reachable from the index: "
        f"{sorted(str(p.relative_to(site)) for p in pages - seen)}"
    )


def test_the_site_has_the_reference_made_from_the_code(site: Path) -> None:
    from typer.main import get_command

    from jobs_lib.cli import app
    from jobs_lib.config import documented

    cli = (site / "reference" / "cli.html").read_text()
    command = get_command(app)
    names = list(getattr(command, "commands", {}))
    assert len(names) >= 15
    for name in names:
        assert f"<code>jobs {name}" in cli, f"the CLI page lacks `jobs {name}`"
    settings = (site / "reference" / "settings.html").read_text()
    for setting in documented():
        assert setting.env in settings
    errors = (site / "reference" / "errors.html").read_text()
    from jobs_lib import errors as errors_module

    for name, value in vars(errors_module).items():
        if (
            isinstance(value, type)
            and issubclass(value, BaseException)
            and value.__module__ == errors_module.__name__
        ):
            assert f'id="jobs_lib.errors.{name}"' in errors, f"the errors page lacks {name}"
    python = (site / "reference" / "python.html").read_text()
    for name in ("handler", "JobContext", "JobsClient", "App", "Settings", "run_handler"):
        assert name in python
    bench = (site / "discussions" / "benchmarks.html").read_text()
    assert "python -m bench.capacity" in bench


def test_the_readme_is_a_five_minute_read_with_live_links() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    assert "./scripts/demo" in text and "./scripts/test" in text
    dead = []
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if not re.match(r"^[a-z]+:", target) and not (ROOT / target).exists():
            dead.append(target)
    assert not dead, f"README links to files that do not exist: {dead}"


def test_nothing_points_at_files_outside_the_repository() -> None:
    outside = re.compile(r"\bseeds/\d|\bshared/[A-Z]|DESIGN\.md|EMULATOR\.md|STYLE\.md")
    offenders = []
    for folder in ("jobs_lib", "docs", "bench", "functions", "scripts"):
        for path in (ROOT / folder).rglob("*"):
            if "venv" in path.parts or "node_modules" in path.parts or "__pycache__" in path.parts:
                continue
            if path.suffix in {".py", ".md", ".sh", ".ts", ".js", ".html"} or (
                path.parent.name == "scripts" and not path.suffix
            ):
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if outside.search(line):
                        offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        if outside.search(line):
            offenders.append(f"README.md:{number}: {line.strip()}")
    assert not offenders, "references to files that are not in this repository:\n" + "\n".join(
        offenders
    )
    assert outside.search("see seeds/000") and outside.search(
        "shared/DESIGN.md"
    )  # the check itself bites
