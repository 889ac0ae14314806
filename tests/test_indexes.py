"""firestore.indexes.json declares an index for every query the store package runs.

The emulator runs any query without an index; production refuses one that
needs a composite index nobody declared, or a single-field index that a field
override removed. So this test runs every query-building method of the store
package against the emulator, captures the structured query each sends, works
out the index it needs (Firestore's rules: equality fields in any order, then
the order-by fields, inequality fields ordered implicitly, ``__name__`` last in
the direction of the last field), and checks the file. A new query method in
jobs_lib/store fails `test_every_query_method_is_exercised` until it is added
to `CALLS` below (and its index, if any, to firestore.indexes.json).
"""

from __future__ import annotations

import ast
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from jobs_lib.store import JobStore, wire
from jobs_lib.store.listing import JobListing, ScheduleListing, Scope

from .conftest import ROOT

STORE = ROOT / "jobs_lib" / "store"
INDEXES = json.loads((ROOT / "firestore.indexes.json").read_text())

#: Helpers that build part of a query for the methods that run it (exercised through them).
HELPERS = {
    "JobStore._pending": "due, scan_pending and the other pending queries",
    "JobListing._lane_query": "JobListing.page",
    "Connection.count": "count_by_status, which builds the queries it counts",
    "_in_shards": "the sharded queries that need one order across shards (the listings, counts)",
    "JobStore._lane": "due, due_by_priority, due_strings and expired (one range of shards each)",
}


def query_builders() -> set[str]:
    """Every function in jobs_lib/store that builds a query (calls where, order_by or
    FieldFilter)."""
    found = set()
    for path in sorted(STORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            functions = (
                [(node.name, f) for f in node.body if isinstance(f, ast.FunctionDef)]
                if isinstance(node, ast.ClassDef)
                else [("", node)]
                if isinstance(node, ast.FunctionDef)
                else []
            )
            for owner, fn in functions:
                calls = {
                    c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", "")
                    for c in ast.walk(fn)
                    if isinstance(c, ast.Call)
                }
                if calls & {"where", "order_by", "FieldFilter", "count"}:
                    found.add(f"{owner}.{fn.name}" if owner else fn.name)
    return found


@dataclass
class Stores:
    jobs: JobStore
    listing: JobListing
    schedules: Any
    schedule_listing: ScheduleListing


NOW = datetime.now(UTC)


def _listing_pages(s: Stores) -> None:
    s.jobs.ref("a").set(
        {
            "type": "t",
            "status": "pending",
            "createdAt": NOW,
            "createdBy": "u",
            "orgId": "o",
            "shard": 3,
        }
    )
    s.jobs.ref("b").set(
        {
            "type": "t",
            "status": "pending",
            "createdAt": "2025-01-01T00:00:00.000Z",
            "createdBy": "u",
            "orgId": "o",
            "shard": 17,
        }
    )
    for scope in (Scope("createdBy", "u"), Scope("orgId", "o"), Scope(None, None)):
        for status in (None, "pending"):
            for job_type in (None, "t"):
                first = s.listing.page(scope, status=status, job_type=job_type, page_size=1)
                assert first.next_token is not None
                s.listing.page(
                    scope,
                    status=status,
                    job_type=job_type,
                    page_size=1,
                    page_token=first.next_token,
                )
                s.listing.page(
                    scope,
                    status=status,
                    job_type=job_type,
                    page_size=1,
                    created_after=datetime(2020, 1, 1, tzinfo=UTC),
                    created_before=NOW,
                )


#: How the test calls each query method: "Class.method" -> a call with sample arguments.
CALLS: dict[str, Callable[[Stores], Any]] = {
    "JobStore.due": lambda s: [
        s.jobs.due(NOW, 5),
        s.jobs.due(NOW, 5, start=17),
        s.jobs.due(NOW, 5, partition=0),
        s.jobs.due(NOW, 5, partition=7),
        s.jobs.due(NOW, 5, partition=14),
        s.jobs.due(NOW, 5, exclude_types=["paused"]),
        s.jobs.due(NOW, 5, partition=3, exclude_types=["a", "b"]),
    ],
    "JobStore.due_by_priority": lambda s: s.jobs.due_by_priority(NOW, 5),
    "JobStore.due_strings": lambda s: s.jobs.due_strings(NOW, 5),
    "JobStore.due_for_key": lambda s: [
        s.jobs.due_for_key("t", field, "k", NOW, 5) for field in ("orgId", "createdBy")
    ],
    "JobStore.next_for_key": lambda s: [
        s.jobs.next_for_key("t", field, "k") for field in ("orgId", "createdBy")
    ],
    "JobStore.key_has_live_jobs": lambda s: [
        s.jobs.key_has_live_jobs("t", field, "k") for field in ("orgId", "createdBy")
    ],
    "JobStore.key_counts": lambda s: [
        s.jobs.key_counts("t", field, "k", NOW) for field in ("orgId", "createdBy")
    ],
    "JobStore.due_of_type": lambda s: s.jobs.due_of_type("t", NOW, 5),
    "FairKeys.keys": lambda s: [s.jobs.fair.keys("t", 5), s.jobs.fair.keys("t", 5, after="x")],
    "JobStore.scan_pending": lambda s: [s.jobs.scan_pending(None, 5), s.jobs.scan_pending("m", 5)],
    "JobStore.expired": lambda s: s.jobs.expired(NOW, 5),
    "JobStore.expired_finished": lambda s: s.jobs.expired_finished(NOW, 5),
    "JobStore.expired_finished_jobs": lambda s: s.jobs.expired_finished_jobs(NOW, 5),
    "JobStore.page": lambda s: [
        s.jobs.page(status="failed", job_type=t, after=a, limit=5, org_id=o)
        for t in (None, "t")
        for a in (None, "m")
        for o in (None, "o")
    ],
    "JobStore.count_by_status": lambda s: s.jobs.count_by_status(),
    "JobStore.due_count": lambda s: s.jobs.due_count("t", NOW),
    "JobStore.oldest_due": lambda s: [
        s.jobs.oldest_due("t", NOW),
        s.jobs.oldest_due("t", NOW, org_id="o"),
    ],
    "JobStore.count_jobs": lambda s: [
        s.jobs.count_jobs(status=status, job_type="t", org_id=org, **bound)
        for org in (None, "o")
        for status, bound in (
            ("pending", {"scheduled_until": NOW}),
            ("pending", {"scheduled_after": NOW}),
            ("in_progress", {}),
            ("completed", {"completed_since": NOW}),
            ("failed", {"completed_since": NOW}),
        )
    ],
    "JobStore.count_matching": lambda s: [
        s.jobs.count_matching(status="failed", job_type=t, org_id=o)
        for t in (None, "t")
        for o in (None, "o")
    ],
    "MinuteStats.since": lambda s: s.jobs.minute_stats.since(NOW),
    "JobStore.odd_statuses": lambda s: s.jobs.odd_statuses(5),
    "JobStore.running_page": lambda s: [s.jobs.running_page(None, 5), s.jobs.running_page("m", 5)],
    "JobStore.document_page": lambda s: [
        s.jobs.document_page(None, 5),
        s.jobs.document_page("m", 5),
    ],
    "JobStore.cancel_requests": lambda s: s.jobs.cancel_requests(5),
    "JobStore.list_jobs": lambda s: [
        s.jobs.list_jobs(),
        s.jobs.list_jobs(status="pending"),
        s.jobs.list_jobs(job_type="t"),
        s.jobs.list_jobs(status="failed", job_type="t"),
    ],
    "JobListing.page": _listing_pages,
    # flows (jobs_lib.engine.followups)
    "JobStore.dependents": lambda s: [
        s.jobs.dependents("p", None, 5),
        s.jobs.dependents("p", "m", 5),
    ],
    "JobStore.unsettled_parents": lambda s: s.jobs.unsettled_parents(5),
    "JobStore.blocked_page": lambda s: [s.jobs.blocked_page(None, 5), s.jobs.blocked_page("m", 5)],
    "JobStore.flow_page": lambda s: [s.jobs.flow_page("f", None, 5), s.jobs.flow_page("f", "m", 5)],
    "ScheduleListing.page": lambda s: [
        s.schedule_listing.page(Scope("createdBy", "u"), page_size=1),
        s.schedule_listing.page(Scope("orgId", "o")),
        s.schedule_listing.page(Scope(None, None)),
    ],
    # scheduledJobs (jobs_lib/store/schedules.py)
    "ScheduleStore.due": lambda s: s.schedules.due(NOW, 5),
    "ScheduleStore.scan": lambda s: [s.schedules.scan(None, 5), s.schedules.scan("m", 5)],
    "ScheduleStore.list_schedules": lambda s: [
        s.schedules.list_schedules(),
        s.schedules.list_schedules(created_by="u"),
        s.schedules.list_schedules(org_id="o"),
        s.schedules.list_schedules(created_by="u", org_id="o"),
    ],
    "ScheduleStore.owner_ids": lambda s: s.schedules.owner_ids("u", 20),
    "ScheduleStore.count_of": lambda s: s.schedules.count_of("u"),
}


@pytest.fixture
def captured(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every structured query sent while the test runs (plain and aggregation queries)."""
    from google.cloud.firestore_v1.aggregation import AggregationQuery

    queries: list[Any] = []
    real_run = wire.run_query
    real_get = AggregationQuery.get

    def run_query(client: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        queries.append(query._to_protobuf())
        return real_run(client, query, *args, **kwargs)

    def aggregation_get(self: Any, *args: Any, **kwargs: Any) -> Any:
        queries.append(self._nested_query._to_protobuf())
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(wire, "run_query", run_query)
    monkeypatch.setattr(AggregationQuery, "get", aggregation_get)
    yield queries


def stores(store: JobStore) -> Stores:
    try:
        schedule_store = importlib.import_module("jobs_lib.store.schedules").ScheduleStore(
            store.settings
        )
    except (ImportError, AttributeError):
        schedule_store = None
    return Stores(store, JobListing(store), schedule_store, ScheduleListing(store))


# -- what an index a query needs ------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """The index a query needs: a composite one, or single-field indexes on some fields."""

    collection: str
    equality: frozenset[str]
    orders: tuple[tuple[str, str], ...]  # after the equality fields, __name__ only when explicit

    @property
    def composite(self) -> bool:
        fields = [f for f, _d in self.orders if f != "__name__"]
        if not fields:
            return bool(self.equality) and bool(self.orders)  # equality + __name__ descending
        return bool(self.equality) or len(self.orders) > 1

    def describe(self) -> str:
        eq = ", ".join(f"{f} ==" for f in sorted(self.equality))
        rest = ", ".join(f"{f} {d.lower()}" for f, d in self.orders)
        return f"{self.collection}: [{eq}{'; ' if eq and rest else ''}{rest}]"


def _filters(where: Any) -> Iterator[Any]:
    if where is None:
        return
    if "composite_filter" in where:
        for sub in where.composite_filter.filters:
            yield from _filters(sub)
    elif "field_filter" in where:
        yield where.field_filter
    # unary filters (IS NULL / IS NAN) act as equality on a field; the store uses none


def need_of(query: Any) -> Need:
    """Derive the index a StructuredQuery needs (Firestore's documented index rules)."""
    collection = query.from_[0].collection_id
    equality: set[str] = set()
    inequality: set[str] = set()
    where = query.where if "where" in query else None
    for f in _filters(where):
        field = f.field.field_path
        if f.op.name in ("EQUAL", "IN", "ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY"):
            equality.add(field)
        elif field != "__name__":
            inequality.add(field)
    orders = [(o.field.field_path, o.direction.name) for o in query.order_by]
    ordered = {f for f, _d in orders}
    # Inequality fields not ordered explicitly are ordered after the explicit ones, by name,
    # ascending.
    orders += [(f, "ASCENDING") for f in sorted(inequality - ordered)]
    name_direction = None
    if orders and orders[-1][0] == "__name__":
        name_direction = orders.pop()[1]
    fields = tuple((f, d) for f, d in orders if f != "__name__")
    last = fields[-1][1] if fields else "ASCENDING"
    if name_direction is not None and name_direction != last:
        fields += (("__name__", name_direction),)
    return Need(collection, frozenset(equality - {f for f, _d in fields}), fields)


def declared_composites() -> list[tuple[str, list[tuple[str, str]]]]:
    out = []
    for index in INDEXES["indexes"]:
        assert index["queryScope"] == "COLLECTION"
        fields = [(f["fieldPath"], f["order"]) for f in index["fields"]]
        if len(fields) > 1 and fields[-1][0] == "__name__" and fields[-1][1] == fields[-2][1]:
            fields.pop()  # the implicit last field, written out
        out.append((index["collectionGroup"], fields))
    return out


def satisfied(need: Need) -> bool:
    """A declared composite index serves the query (equality fields first, in any order)."""
    k = len(need.equality)
    for collection, fields in declared_composites():
        same_shape = collection == need.collection and len(fields) == k + len(need.orders)
        if (
            same_shape
            and {f for f, _d in fields[:k]} == need.equality
            and tuple(fields[k:]) == need.orders
        ):
            return True
    return False


def single_field_blocked(need: Need) -> list[str]:
    """Fields the query needs a single-field index on that a field override removed."""
    blocked = []
    overrides = {
        (o["collectionGroup"], o["fieldPath"]): o.get("indexes") for o in INDEXES["fieldOverrides"]
    }
    wanted = [(f, None) for f in need.equality] + [
        (f, d) for f, d in need.orders if f != "__name__"
    ]
    for field, direction in wanted:
        kept = overrides.get((need.collection, field))
        if kept is None:
            continue  # no override: Firestore's automatic single-field indexes exist
        orders = {i.get("order") for i in kept if i.get("queryScope", "COLLECTION") == "COLLECTION"}
        if not (orders & {"ASCENDING", "DESCENDING"} if direction is None else direction in orders):
            blocked.append(field)
    return blocked


# -- the tests ------------------------------------------------------------------------------------


def test_every_query_method_is_exercised(store: JobStore) -> None:
    builders = query_builders()
    assert {"JobStore.due", "JobListing._lane_query"} <= builders  # the scan itself works
    missing = sorted(builders - set(CALLS) - set(HELPERS))
    assert not missing, (
        f"query methods this test does not run (add them to CALLS and their index to "
        f"firestore.indexes.json): {missing}"
    )


def test_every_query_the_store_runs_has_its_index(store: JobStore, captured: list[Any]) -> None:
    s = stores(store)
    classes = {
        "JobStore": JobStore,
        "JobListing": JobListing,
        "ScheduleListing": ScheduleListing,
        "ScheduleStore": type(s.schedules) if s.schedules is not None else None,
        "MinuteStats": type(s.jobs.minute_stats),
        "FairKeys": type(s.jobs.fair),
    }
    for name, call in CALLS.items():
        owner, method = name.split(".")
        if hasattr(
            classes[owner], method
        ):  # methods another branch removed or has not added yet are skipped
            call(s)
    needs = {need_of(q) for q in captured}
    assert len(captured) >= 40 and len(needs) >= 10
    missing = sorted(n.describe() for n in needs if n.composite and not satisfied(n))
    assert not missing, f"composite indexes missing from firestore.indexes.json: {missing}"
    blocked = sorted(
        f"{n.describe()} needs {f}"
        for n in needs
        if not n.composite
        for f in single_field_blocked(n)
    )
    assert not blocked, (
        f"queries needing a single-field index that a field override removes: {blocked}"
    )
    # The listing's lanes are among them, in the shape its docstring promises.
    assert (
        Need(
            "backgroundJobs",
            frozenset({"shard", "createdBy", "status", "type"}),
            (("createdAt", "DESCENDING"),),
        )
        in needs
    )
    # Every query that ranges over or orders by a timestamp reads the shard lanes
    # (jobs_lib.store.base.SHARDS).
    timestamps = {
        "createdAt",
        "updatedAt",
        "startedAt",
        "completedAt",
        "scheduledFor",
        "leaseExpiresAt",
        "expireAt",
    }
    # (shard equal to a value or in a set, or the first order: a range of shards read in shard
    # order)
    unsharded = sorted(
        n.describe()
        for n in needs
        if n.collection == "backgroundJobs"
        and {f for f, _d in n.orders} & timestamps
        and "shard" not in n.equality
        and (not n.orders or n.orders[0][0] != "shard")
    )
    assert not unsharded, (
        f"queries over a timestamp outside the shard lanes (a hot index range at scale): "
        f"{unsharded}"
    )
    assert (
        Need("backgroundJobs", frozenset({"shard", "orgId"}), (("createdAt", "DESCENDING"),))
        in needs
    )


def test_the_derivation_follows_firestores_rules(store: JobStore) -> None:
    """need_of on hand-made queries, so a wrong derivation cannot pass the test above by
    accident."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    c = store.collection
    eq_only = c.where(filter=FieldFilter("a", "==", 1)).where(filter=FieldFilter("b", "==", 2))
    assert not need_of(eq_only._to_protobuf()).composite
    single_range = c.where(filter=FieldFilter("a", ">", 1))
    assert need_of(single_range._to_protobuf()) == Need(
        "backgroundJobs", frozenset(), (("a", "ASCENDING"),)
    )
    assert not need_of(single_range._to_protobuf()).composite
    eq_range = (
        c.where(filter=FieldFilter("s", "==", 1))
        .where(filter=FieldFilter("t", "<=", 5))
        .order_by("t", direction="DESCENDING")
    )
    assert need_of(eq_range._to_protobuf()) == Need(
        "backgroundJobs", frozenset({"s"}), (("t", "DESCENDING"),)
    )
    mixed_name = (
        c.where(filter=FieldFilter("s", "==", 1))
        .order_by("t")
        .order_by("__name__", direction="DESCENDING")
    )
    assert need_of(mixed_name._to_protobuf()).orders == (
        ("t", "ASCENDING"),
        ("__name__", "DESCENDING"),
    )
    assert not satisfied(need_of(mixed_name._to_protobuf()))
    assert satisfied(
        need_of(
            c.where(filter=FieldFilter("shard", "in", [1, 2]))
            .where(filter=FieldFilter("status", "==", "pending"))
            .where(filter=FieldFilter("leaseExpiresAt", "<=", 1))
            ._to_protobuf()
        )
    )
    assert not satisfied(
        need_of(
            c.where(filter=FieldFilter("status", "==", "pending"))
            .where(filter=FieldFilter("leaseExpiresAt", "<=", 1))
            ._to_protobuf()
        )
    )
    exempt = c.where(filter=FieldFilter("metadata", ">", 1))
    assert single_field_blocked(need_of(exempt._to_protobuf())) == ["metadata"]


def test_overrides_exempt_the_large_and_hot_fields_and_set_the_ttl_fields() -> None:
    overrides = {(o["collectionGroup"], o["fieldPath"]): o for o in INDEXES["fieldOverrides"]}
    for field in ("metadata", "result", "progress", "lease", "error", "errorDetails"):
        assert overrides[("backgroundJobs", field)]["indexes"] == [], field
    assert overrides[("backgroundJobs", "expireAt")]["ttl"] is True
    for field in (
        "createdAt",
        "updatedAt",
        "startedAt",
        "completedAt",
        "scheduledFor",
        "leaseExpiresAt",
        "expireAt",
    ):
        assert overrides[("backgroundJobs", field)]["indexes"] == [], (
            field
        )  # sequential: only the sharded composites hold them
    assert overrides[("backgroundJobs_rateLimits", "expireAt")]["ttl"] is True
    assert overrides[("backgroundJobs_rateLimits", "count")]["indexes"] == []
