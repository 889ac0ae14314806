"""The library type-checks strictly and lints clean (mypy strict, ruff), and exports what it
says."""

from __future__ import annotations

import subprocess
import sys

import jobs_lib

from .conftest import ROOT


def test_mypy_strict_passes_on_the_library() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


PYTHON_TREES = ["jobs_lib", "tests", "bench", "functions", "scripts/docs_hooks.py"]


def test_ruff_passes() -> None:
    """Lint clean, lines within 100 characters (E501) included."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *PYTHON_TREES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_in_the_house_format() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *PYTHON_TREES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, "run: ruff format\n" + result.stdout + result.stderr


def test_public_names_are_what_all_says() -> None:
    for name in jobs_lib.__all__:
        assert hasattr(jobs_lib, name), name
    public = {
        n
        for n in vars(jobs_lib)
        if not n.startswith("_") and not isinstance(getattr(jobs_lib, n), type(jobs_lib))
    }
    assert public == set(jobs_lib.__all__)
