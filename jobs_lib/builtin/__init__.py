"""Handlers that are always registered."""

from jobs_lib.builtin import housekeeping, notifications, webhooks

__all__ = ["housekeeping", "notifications", "webhooks"]
