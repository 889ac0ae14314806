"""All of jobs_lib's Firestore access, and every collection and field name.

The runner, worker, discovery, scheduler and client call these stores and
never build a query or a document themselves.
"""

from jobs_lib.store.base import (
    PARTITION_BOUNDS,
    PARTITIONS,
    TRANSIENT,
    Claim,
    FencedWrite,
    OpStats,
    StoreBase,
    WriteOutcome,
    WriteStatus,
    partition_of,
)
from jobs_lib.store.jobs import JobStore

__all__ = [
    "PARTITIONS",
    "PARTITION_BOUNDS",
    "TRANSIENT",
    "Claim",
    "FencedWrite",
    "JobStore",
    "OpStats",
    "StoreBase",
    "WriteOutcome",
    "WriteStatus",
    "partition_of",
]
