"""The REST jobs API: routing, Firebase ID token auth, pydantic validation, OpenAPI.

`JobsApi` is a WSGI app (and `JobsApi.handle` answers one request);
`jobs_lib.app.App.api` builds the one the ``api`` HTTP function in
``functions/main.py`` answers with. See `jobs_lib.api.app` for the endpoints and their answers.
"""

from jobs_lib.api.app import ApiError, JobsApi
from jobs_lib.api.auth import PERMISSIONS, Caller, TokenVerifier
from jobs_lib.api.openapi import openapi_document

__all__ = ["PERMISSIONS", "ApiError", "Caller", "JobsApi", "TokenVerifier", "openapi_document"]
