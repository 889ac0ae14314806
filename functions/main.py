"""The Cloud Functions of this repository: jobs_lib's entry points (`jobs_lib.deploy.entrypoints`).

functions-framework serves `on_job_created`, `tick` and `api` from here; the Firebase CLI finds the
firebase-functions SDK declarations `jobs_created`, `jobs_tick` and `jobs_api`. `jobs init` writes
this same file into a project it adopts; add your own functions below it.
"""

from jobs_lib.deploy.entrypoints import *  # noqa: F403 - both toolchains look them up by name
