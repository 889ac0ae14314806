"""Handlers that are always registered."""

from jobs_lib.builtin import continuations, housekeeping, notifications, webhooks

__all__ = ["continuations", "housekeeping", "notifications", "webhooks"]
