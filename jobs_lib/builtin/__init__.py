"""Handlers that are always registered."""

from jobs_lib.builtin import housekeeping, notifications

__all__ = ["housekeeping", "notifications"]
