"""Firestore writes as raw protobuf, for the store's hot path.

The client library builds every write through proto-plus wrappers, which
cost more CPU than the rest of a no-op job together (profiled: 38% of the
worker's time). The runner's writes are simple (a few top-level fields,
server timestamps, deletes, one precondition), so `update_write` builds them
directly on the underlying protobuf classes. Values it does not know are
handed to the library's own encoder, so the result is the same message.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.transforms import DELETE_FIELD, SERVER_TIMESTAMP, Sentinel
from google.cloud.firestore_v1.types import document as document_types
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.cloud.firestore_v1.types import write as write_types
from google.protobuf import timestamp_pb2

Write = write_types.Write.pb()
BatchWriteRequest = firestore_types.BatchWriteRequest.pb()
RunQueryRequest = firestore_types.RunQueryRequest.pb()
_REQUEST_TIME = write_types.DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp_pb(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    """A datetime as a protobuf Timestamp, keeping nanoseconds when it has them."""
    if isinstance(moment, DatetimeWithNanoseconds):
        return moment.timestamp_pb()  # type: ignore[no-untyped-call]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)


def from_timestamp_pb(stamp: timestamp_pb2.Timestamp) -> DatetimeWithNanoseconds:
    """A protobuf Timestamp as the datetime type the client library returns."""
    return DatetimeWithNanoseconds.from_timestamp_pb(stamp)  # type: ignore[no-untyped-call,no-any-return]


def fill_value(target: Any, value: Any) -> None:
    """Encode `value` into the Value message `target`."""
    if value is None:
        target.null_value = 0
    elif value is True or value is False:
        target.boolean_value = value
    elif isinstance(value, int):
        target.integer_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, dt.datetime):
        target.timestamp_value.CopyFrom(timestamp_pb(value))
    elif isinstance(value, dict):
        fields = target.map_value.fields
        target.map_value.SetInParent()
        for key, item in value.items():
            fill_value(fields[key], item)
    elif isinstance(value, (list, tuple)):
        values = target.array_value.values
        target.array_value.SetInParent()
        for item in value:
            fill_value(values.add(), item)
    else:
        target.CopyFrom(_helpers.encode_value(value)._pb)


def update_write(
    document_name: str,
    fields: dict[str, Any],
    update_time: dt.datetime | None,
    *,
    create: bool = False,
) -> Any:
    """An update of top-level `fields` (SERVER_TIMESTAMP and DELETE_FIELD allowed, also one level
    down; a key "map.name" writes one entry of a map, keeping the others) conditioned on the
    document's `update_time`, or on its existence when None; with `create`, a new document,
    conditioned on there being none."""
    write = Write()
    write.update.name = document_name
    mask = write.update_mask.field_paths
    doc_fields = write.update.fields
    server_times: list[str] = []
    for key, value in fields.items():
        if "." in key:
            # One entry of a map ("steps.fetch"): written alone, its siblings kept.
            top, sub = key.split(".", 1)
            path = f"{top}.`{sub.replace(chr(92), chr(92) * 2).replace('`', chr(92) + '`')}`"
            if isinstance(value, Sentinel) and value is not DELETE_FIELD:
                raise ValueError(f"unsupported sentinel at {key}")
            mask.append(path)
            if value is not DELETE_FIELD:
                doc_fields[top].map_value.SetInParent()
                fill_value(doc_fields[top].map_value.fields[sub], value)
        elif value is DELETE_FIELD:
            mask.append(key)
        elif value is SERVER_TIMESTAMP:
            server_times.append(key)
        elif isinstance(value, dict) and any(isinstance(v, Sentinel) for v in value.values()):
            plain = {}
            for sub, item in value.items():
                if item is SERVER_TIMESTAMP:
                    server_times.append(f"{key}.{sub}")
                elif isinstance(item, Sentinel):
                    raise ValueError(f"unsupported sentinel at {key}.{sub}")
                else:
                    plain[sub] = item
            mask.append(key)
            fill_value(doc_fields[key], plain)
        elif isinstance(value, Sentinel):
            raise ValueError(f"unsupported sentinel at {key}")
        else:
            mask.append(key)
            fill_value(doc_fields[key], value)
    for path in server_times:
        transform = write.update_transforms.add()
        transform.field_path = path
        transform.set_to_server_value = _REQUEST_TIME
    if create:
        write.ClearField("update_mask")
        write.current_document.exists = False
    elif update_time is not None:
        write.current_document.update_time.CopyFrom(timestamp_pb(update_time))
    else:
        write.current_document.exists = True
    return write


def batch_write(client: Any, writes: list[Any], timeout: float = 30.0) -> Any:
    """Send one BatchWrite RPC of raw Write messages; returns the raw response."""
    request = BatchWriteRequest(database=client._database_string)
    request.writes.extend(writes)
    response = client._firestore_api.batch_write(
        request=firestore_types.BatchWriteRequest.wrap(request),
        metadata=client._rpc_metadata,
        retry=None,
        timeout=timeout,
    )
    return response._pb


class Row(NamedTuple):
    """A document a query returned: its id, fields, update time (the version a conditioned write
    names) and create time (Firestore's own, whatever the fields say)."""

    id: str
    fields: dict[str, Any]
    version: DatetimeWithNanoseconds
    created: DatetimeWithNanoseconds


def run_query(
    client: Any, query: Any, timeout: float = 60.0
) -> tuple[list[Row], DatetimeWithNanoseconds | None]:
    """Run a query built with the client library; decode the documents without proto-plus.

    Returns a `Row` per document, and the read time, which the server sends even when nothing
    matched."""
    request = RunQueryRequest(parent=f"{client._database_string}/documents")
    request.structured_query.CopyFrom(query._to_protobuf()._pb)
    stream = client._firestore_api.run_query(
        request=firestore_types.RunQueryRequest.wrap(request),
        metadata=client._rpc_metadata,
        retry=None,
        timeout=timeout,
    )
    documents = []
    read_time = None
    for response in stream:
        pb = response._pb
        if pb.HasField("read_time"):
            read_time = pb.read_time
        if pb.HasField("document"):
            doc = pb.document
            fields = {
                key: _helpers.decode_value(value, client) for key, value in doc.fields.items()
            }
            documents.append(
                Row(
                    doc.name.rsplit("/", 1)[1],
                    fields,
                    from_timestamp_pb(doc.update_time),
                    from_timestamp_pb(doc.create_time),
                )
            )
    return documents, (from_timestamp_pb(read_time) if read_time is not None else None)


def decode_value(value: Any, client: Any = None) -> Any:
    """A raw Value message as Python, as the client library decodes it; without a client,
    document references become their path ("users/u1")."""
    kind = value.WhichOneof("value_type")
    if kind == "map_value":
        return {key: decode_value(item, client) for key, item in value.map_value.fields.items()}
    if kind == "array_value":
        return [decode_value(item, client) for item in value.array_value.values]
    if kind == "reference_value" and client is None:
        return value.reference_value.split("/documents/", 1)[-1]
    return _helpers.decode_value(value, client)


def encoded_size(value: Any) -> int:
    """Bytes of a value as Firestore encodes it (close to how it counts document size)."""
    target = document_types.Value.pb()()
    fill_value(target, value)
    return int(target.ByteSize())


__all__ = [
    "BatchWriteRequest",
    "Row",
    "Write",
    "batch_write",
    "decode_value",
    "encoded_size",
    "fill_value",
    "from_timestamp_pb",
    "run_query",
    "timestamp_pb",
    "update_write",
]
