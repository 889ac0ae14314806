"""Slice leases: which worker reads which part of a backlog (see jobs_lib.discovery)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs_lib import wire
from jobs_lib.store.base import _OK, PARTITIONS, StoreBase


class SliceLeases(StoreBase):
    """The ``{collection}_slices`` collection: one small document per slice of the id space."""

    @property
    def slices(self) -> Any:
        """The collection of slice leases (``backgroundJobs_slices``), one document per partition."""
        return self.db.collection(f"{self.settings.collection}_slices")

    def read_slices(self) -> list[tuple[int, dict[str, Any], datetime | None]]:
        """Every slice lease: (partition, fields, version); a missing document has no version."""
        refs = [self.slices.document(str(i)) for i in range(PARTITIONS)]
        snaps = {snap.id: snap for snap in self._retrying(lambda: list(self.db.get_all(refs)))}
        self.stats.add(reads=PARTITIONS, kind="read:slices")
        result = []
        for i in range(PARTITIONS):
            snap = snaps.get(str(i))
            if snap is not None and snap.exists:
                result.append((i, snap.to_dict() or {}, snap.update_time))
            else:
                result.append((i, {}, None))
        return result

    def write_slice(self, partition: int, fields: dict[str, Any], version: datetime | None) -> datetime | None:
        """Take, renew or give back a slice lease if it is unchanged since read; returns the new version."""
        name = f"{self.slices.document(str(partition))._document_path}"
        write = wire.update_write(name, fields, version, create=version is None)
        response = self._retrying(lambda: wire.batch_write(self.db, [write]))
        status = response.status[0].code if response.status else _OK
        self.stats.add(writes=1, kind="write:slice" if status == _OK else "write:slice:refused")
        return wire.from_timestamp_pb(response.write_results[0].update_time) if status == _OK else None

