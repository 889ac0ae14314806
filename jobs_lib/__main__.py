"""`python -m jobs_lib` runs the `jobs` command line."""

from jobs_lib.cli import main

main()
