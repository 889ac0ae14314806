"""Documents as Firestore's events carry them, decoded here so that no Google type leaves the store.

A created-event (Eventarc's ``DocumentEventData`` protobuf, or the emulator's base64 of it) and
the firebase-functions SDK's snapshot both become a `Job`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud.firestore_v1.types import document as document_types
from google.events.cloud.firestore import DocumentEventData

from jobs_lib.model.job import Job
from jobs_lib.store.wire import decode_value, from_timestamp_pb


@dataclass(frozen=True)
class CreatedDocument:
    """The document a created-event carries."""

    job_id: str
    collection: str
    fields: dict[str, Any]
    update_time: datetime
    create_time: datetime | None = None

    @property
    def job(self) -> Job:
        """The document as a job."""
        return Job.from_document(
            self.job_id, self.fields, self.update_time, created=self.create_time
        )


def decode_document_event(data: bytes | str | None, client: Any = None) -> CreatedDocument | None:
    """Decode a Firestore document event's data; None when it carries no document.

    Eventarc sends the ``DocumentEventData`` protobuf as raw bytes; the emulator
    sends the same bytes base64-encoded. Raw protobuf starts with a byte outside
    the base64 alphabet, so strict base64 decoding tells them apart.
    """
    if not data:
        return None
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        payload = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        payload = raw
    message = DocumentEventData.pb()()
    message.ParseFromString(payload)
    if not message.HasField("value") or not message.value.name:
        return None  # e.g. the emulator's "created" for a delete of a missing document
    # google.events and google.cloud.firestore share the Document wire format.
    document = document_types.Document.pb()()
    document.ParseFromString(message.value.SerializeToString())
    fields = {key: decode_value(value, client) for key, value in document.fields.items()}
    path = document.name.split("/documents/", 1)[1]
    collection, _, job_id = path.rpartition("/")
    created = from_timestamp_pb(document.create_time) if document.HasField("create_time") else None
    return CreatedDocument(
        job_id, collection, fields, from_timestamp_pb(document.update_time), created
    )


def job_of_snapshot(job_id: str, snapshot: Any) -> Job:
    """A job from a DocumentSnapshot (the firebase-functions SDK's created-event)."""
    return Job.from_document(
        job_id,
        snapshot.to_dict() or {},
        snapshot.update_time,
        created=getattr(snapshot, "create_time", None),
    )
