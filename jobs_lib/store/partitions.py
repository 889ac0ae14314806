"""Partition leases: which worker reads which part of a backlog (see jobs_lib.engine.discovery)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs_lib.store import wire
from jobs_lib.store.base import PARTITIONS, Code, StorePart


class PartitionLeases(StorePart):
    """The ``{collection}_partitions`` collection: one small document per partition of the id
    space."""

    @property
    def collection(self) -> Any:
        """The collection of partition leases (``backgroundJobs_partitions``), one document per
        partition."""
        return self.db.collection(f"{self.settings.collection}_partitions")

    def read_partitions(self) -> list[tuple[int, dict[str, Any], datetime | None]]:
        """Every partition lease: (partition, fields, version); a missing document has no
        version."""
        snaps = self.connection.get_all(
            [self.collection.document(str(i)) for i in range(PARTITIONS)], "partitions"
        )
        return [
            (i, snaps[str(i)].to_dict() or {}, snaps[str(i)].update_time)
            if str(i) in snaps
            else (i, {}, None)
            for i in range(PARTITIONS)
        ]

    def write_partition(
        self, partition: int, fields: dict[str, Any], version: datetime | None
    ) -> datetime | None:
        """Take, renew or give back a partition lease if it is unchanged since read; returns the new
        version."""
        name = f"{self.collection.document(str(partition))._document_path}"
        write = wire.update_write(name, fields, version, create=version is None)
        response = self.connection.retrying(lambda: wire.batch_write(self.db, [write]))
        status = response.status[0].code if response.status else Code.OK
        self.stats.add(
            writes=1, kind="write:partition" if status == Code.OK else "write:partition:refused"
        )
        return (
            wire.from_timestamp_pb(response.write_results[0].update_time)
            if status == Code.OK
            else None
        )


__all__ = ["PartitionLeases"]
