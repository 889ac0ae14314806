"""Rate-limit tokens: one small document per start a handler's ``rate`` allows.

A handler with ``rate="50/s"`` may start 50 jobs per one-second window (per
``rate_key`` value) across every worker and function instance. Window w of
type T (key K) has 50 tokens, ``{collection}_rateTokens/{i:05d}~T~K~w`` for i
in 0..49; a start *creates* one, in the same atomic commit as the job's claim,
so a token is written once, ever: no document is hot, and two claimers can
never take the same token (one create is refused, and its claim with it). The
index prefix spreads the ids over 50 key ranges, each written once a window.
Tokens carry ``expireAt`` for the TTL policy (firestore.indexes.json).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore

from jobs_lib.errors import Contention, DocumentExists, StoreRefused
from jobs_lib.store.base import StorePart


def token_id(job_type: str, key: str, window: int, index: int) -> str:
    """The document id of token `index` of a window."""

    def clean(part: str) -> str:
        return "".join(c if c not in "/~" else "_" for c in part)[:200]

    return f"{index:05d}~{clean(job_type)}~{clean(key)}~{window}"


class TokenTaken(Exception):
    """Another claimer created this token first (the job was not claimed)."""


class RateTokens(StorePart):
    """The token documents."""

    @property
    def collection(self) -> Any:
        """``{collection}_rateTokens``."""
        return self.db.collection(f"{self.settings.collection}_rateTokens")

    def take(
        self,
        token: str,
        expire_at: datetime,
        job_id: str,
        job_ref: Any,
        claim_fields: dict[str, Any],
        job_version: datetime | None,
    ) -> datetime | None:
        """Create the token and write the job's claim in one atomic commit; the job's new version,
        None if the job changed since read; raises `TokenTaken` if the token exists already."""
        batch = self.db.batch()
        batch.create(
            self.collection.document(token),
            {"jobId": job_id, "takenAt": firestore.SERVER_TIMESTAMP, "expireAt": expire_at},
        )
        batch.update(
            job_ref, claim_fields, option=self.db.write_option(last_update_time=job_version)
        )
        try:
            results = self.connection.commit(batch, 2, "claim_rate")
        except DocumentExists:
            raise TokenTaken(token) from None
        except (Contention, StoreRefused):
            return None  # the job changed (another claimer took it) or is gone
        version: datetime = results[1].update_time
        return version


__all__ = ["RateTokens", "TokenTaken", "token_id"]
