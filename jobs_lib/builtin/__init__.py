"""Handlers that are always registered."""

from jobs_lib.builtin import notifications

__all__ = ["notifications"]
