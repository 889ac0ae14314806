"""All of jobs_lib's Firestore access, and every collection and field name.

The runner, worker, discovery, scheduler and client call these stores and
never build a query or a document themselves; they see jobs_lib's own errors
(`jobs_lib.errors.StoreError`), never Google's. `JobStore` is the facade: it
owns the job documents and holds the other parts, all on one `Connection`.
"""

from jobs_lib.store.base import (
    ALL_SHARDS,
    ID_ALPHABET,
    PARTITIONS,
    SERVER_TIME,
    SHARDS,
    Code,
    Connection,
    OpStats,
    WriteResult,
    partition_of,
    partition_shards,
    shard_of,
    valid_shard,
)
from jobs_lib.store.claims import Claim, FencedWrite, WriteOutcome, WriteStatus
from jobs_lib.store.jobs import Created, JobStore, open_store
from jobs_lib.store.wire import encoded_size

__all__ = [
    "ALL_SHARDS",
    "ID_ALPHABET",
    "PARTITIONS",
    "SERVER_TIME",
    "SHARDS",
    "Claim",
    "Code",
    "Connection",
    "Created",
    "FencedWrite",
    "JobStore",
    "OpStats",
    "WriteOutcome",
    "WriteResult",
    "WriteStatus",
    "encoded_size",
    "open_store",
    "partition_of",
    "partition_shards",
    "shard_of",
    "valid_shard",
]
