"""Flows (`JobsClient.flow`): jobs that wait for others, released exactly once, on the emulator."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from jobs_lib import JobContext, JobsClient, Status
from jobs_lib.app import App
from jobs_lib.engine.runner import Engine
from jobs_lib.errors import ConfigurationError, PermanentError
from jobs_lib.functions import Functions, run_created
from jobs_lib.registry import HandlerRegistry, default_registry
from jobs_lib.store import JobStore

from .conftest import wait_finished, wait_for


def effects(folder: Path) -> Counter[str]:
    """How many times each job's handler ran, across the worker processes
    (handlers_for_tests.effect)."""
    return Counter(line for path in folder.iterdir() for line in path.read_text().split())


def states(client: JobsClient, flow_id: str) -> dict[str, str]:
    return {
        job.flow_name or job.id: job.status.value if job.status else "?"
        for job in client.flow_jobs(flow_id)
    }


def test_a_chain_runs_in_order_and_each_job_reads_its_parents_results(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    seen: dict[str, dict[str, Any]] = {}

    @registry.handler("step")
    def step(ctx: JobContext[Any]) -> dict[str, Any]:
        seen[ctx.job.flow_name or ""] = ctx.parent_results
        return {"made": ctx.metadata["n"]}

    flow = client.flow(
        [
            {"name": "fetch", "type": "step", "metadata": {"n": 1}},
            {"name": "resize", "type": "step", "metadata": {"n": 2}},
            {
                "name": "publish",
                "type": "step",
                "metadata": {"n": 3},
                "depends_on": ["fetch", "resize"],
                "priority": 2,
            },
            {"name": "notify", "type": "step", "metadata": {"n": 4}, "depends_on": ["publish"]},
        ],
        flow_id="album-7",
    )
    assert states(client, "album-7") == {
        "fetch": "pending",
        "resize": "pending",
        "publish": "blocked",
        "notify": "blocked",
    }
    publish = store.get(flow.job_ids["publish"])
    assert (
        publish is not None
        and publish.depends_on == (flow.job_ids["fetch"], flow.job_ids["resize"])
        and publish.raw["onParentFailure"] == "fail"
    )

    worker_factory(concurrency=4)
    done = wait_finished(store, list(flow.job_ids.values()), timeout=30)
    assert {job.status for job in done.values()} == {Status.COMPLETED}
    assert seen["publish"] == {"fetch": {"made": 1}, "resize": {"made": 2}}
    assert seen["notify"] == {"publish": {"made": 3}} and seen["fetch"] == {}
    by_name = {job.flow_name: job for job in done.values()}
    assert by_name["publish"].started_at >= max(
        by_name["fetch"].completed_at, by_name["resize"].completed_at
    )  # type: ignore[operator]
    assert by_name["notify"].started_at >= by_name["publish"].completed_at  # type: ignore[operator]
    assert all(
        job.raw.get("dependentsSettled") is True
        for name, job in by_name.items()
        if name != "notify"
    )
    # Creating the same flow again writes nothing new.
    assert (
        client.flow(
            [{"name": "fetch", "type": "step", "metadata": {"n": 1}}], flow_id="album-7"
        ).job_ids["fetch"]
        == flow.job_ids["fetch"]
    )
    assert store.get(flow.job_ids["fetch"]).status is Status.COMPLETED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        (
            [
                {"name": "a", "type": "noop", "depends_on": ["c"]},
                {"name": "b", "type": "noop", "depends_on": ["a"]},
                {"name": "c", "type": "noop", "depends_on": ["b"]},
            ],
            "the flow has a cycle: ",
        ),
        ([{"name": "a", "type": "noop", "depends_on": ["a"]}], "flow job 'a' depends on itself"),
        (
            [{"name": "a", "type": "noop", "depends_on": ["ghost"]}],
            "flow job 'a' depends on 'ghost', which is not a job of this flow",
        ),
        (
            [{"name": "a", "type": "noop"}, {"name": "a", "type": "noop"}],
            "flow job 1: the name 'a' is used twice in this flow",
        ),
        ([{"type": "noop"}], "flow job 0: needs a name"),
        (
            [{"name": "a", "type": "noop", "depends_on": "b"}],
            "depends_on must be a list of the names",
        ),
        ([{"name": "a", "type": "noop", "key": "k"}], "idempotency keys are per job"),
        ([{"name": "a", "type": "noop", "metadata": [1]}], "flow job 'a': metadata must be a dict"),
        (
            [{"name": f"p{n}", "type": "noop"} for n in range(51)]
            + [{"name": "c", "type": "noop", "depends_on": [f"p{n}" for n in range(51)]}],
            "depends on 51 jobs; at most 50",
        ),
        (
            [{"name": f"j{n}", "type": "noop"} for n in range(501)],
            "a flow of 501 jobs does not fit one atomic Firestore commit (at most 500 writes); "
            "pass atomic=False",
        ),
        ([], "a flow needs at least one job"),
    ],
)
def test_a_bad_flow_is_refused_before_anything_is_written(
    client: JobsClient, store: JobStore, jobs: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=None) as refused:
        client.flow(jobs, flow_id="bad")
    assert message in str(refused.value)
    if "cycle" in message:
        assert (
            "a -> " in str(refused.value)
            or "b -> " in str(refused.value)
            or "c -> " in str(refused.value)
        )
    assert client.flow_jobs("bad") == []
    with pytest.raises(ConfigurationError, match="at most 20000"):
        client.flow([{"name": f"j{n}", "type": "noop"} for n in range(20_001)], atomic=False)
    with pytest.raises(
        ConfigurationError, match="on_parent_failure must be one of fail, ignore, wait"
    ):
        client.flow([{"name": "a", "type": "noop"}], on_parent_failure="skip")  # type: ignore[arg-type]


def _failing_flow(
    client: JobsClient, registry: HandlerRegistry, policy: Any, flow_id: str
) -> dict[str, str]:
    attempts: Counter[str] = Counter()

    @registry.handler("fails_first", max_attempts=1)
    def fails_first(ctx: JobContext[Any]) -> str:
        attempts[ctx.job_id] += 1
        if attempts[ctx.job_id] == 1:
            raise PermanentError("the upstream API said no")
        return "second time lucky"

    registry.handler("fine")(lambda ctx: "fine")
    return client.flow(
        [
            {"name": "good", "type": "fine"},
            {"name": "bad", "type": "fails_first"},
            {"name": "child", "type": "fine", "depends_on": ["good", "bad"]},
            {"name": "grandchild", "type": "fine", "depends_on": ["child"]},
        ],
        on_parent_failure=policy,
        flow_id=flow_id,
    ).job_ids


def test_policy_fail_cancels_the_jobs_that_wait_naming_the_parent(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ids = _failing_flow(client, registry, "fail", "policy-fail")
    worker_factory(concurrency=4)
    done = wait_finished(store, list(ids.values()), timeout=30)
    assert {name: done[i].status.value for name, i in ids.items()} == {
        "good": "completed",
        "bad": "failed",
        "child": "cancelled",
        "grandchild": "cancelled",
    }
    assert (
        done[ids["child"]].error
        == f"the job it depends on, 'bad' ({ids['bad']}, fails_first), ended failed: "
        f"PermanentError: the upstream API said no"
    )
    assert done[ids["grandchild"]].error.startswith(
        f"the job it depends on, 'child' ({ids['child']}, fine), ended cancelled"
    )  # type: ignore[union-attr]
    assert done[ids["child"]].started_at is None and done[ids["child"]].attempts == 0  # never ran


def test_policy_ignore_runs_the_jobs_that_wait_once_every_parent_has_ended(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ids = _failing_flow(client, registry, "ignore", "policy-ignore")
    worker_factory(concurrency=4)
    done = wait_finished(store, list(ids.values()), timeout=30)
    assert {name: done[i].status.value for name, i in ids.items()} == {
        "good": "completed",
        "bad": "failed",
        "child": "completed",
        "grandchild": "completed",
    }
    assert done[ids["child"]].started_at >= done[ids["bad"]].completed_at  # type: ignore[operator]


def test_policy_wait_keeps_them_blocked_until_the_parent_is_retried_to_success(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ids = _failing_flow(client, registry, "wait", "policy-wait")
    worker_factory(concurrency=4)
    wait_finished(store, [ids["good"], ids["bad"]], timeout=30)
    time.sleep(1.0)  # the release pass after the failure has had time to run, and left them blocked
    assert states(client, "policy-wait") == {
        "good": "completed",
        "bad": "failed",
        "child": "blocked",
        "grandchild": "blocked",
    }
    client.retry(ids["bad"])
    done = wait_finished(store, list(ids.values()), timeout=30)
    assert {name: done[i].status.value for name, i in ids.items()} == {
        "good": "completed",
        "bad": "completed",
        "child": "completed",
        "grandchild": "completed",
    }
    assert done[ids["bad"]].result == "second time lucky"


def test_cancelling_a_flow_cancels_what_has_not_finished(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    registry.handler("quick")(lambda ctx: "ok")

    @registry.handler("slow", timeout=30)
    def slow(ctx: JobContext[Any]) -> None:
        for _ in range(300):
            ctx.progress(message="working")
            time.sleep(0.05)

    flow = client.flow(
        [
            {"name": "quick", "type": "quick"},
            {"name": "slow", "type": "slow"},
            {"name": "after_slow", "type": "quick", "depends_on": ["slow"]},
            {"name": "after_both", "type": "quick", "depends_on": ["after_slow", "quick"]},
        ],
        on_parent_failure="ignore",  # even so: cancelling the flow cancels the jobs that wait
    )
    worker_factory(concurrency=4)
    wait_for(
        lambda: (
            states(client, flow.id)
            == {
                "quick": "completed",
                "slow": "in_progress",
                "after_slow": "blocked",
                "after_both": "blocked",
            }
        ),
        20,
        message="the slow job running",
    )
    touched = client.cancel_flow(flow.id)
    assert sorted(touched) == sorted(
        [flow.job_ids["slow"], flow.job_ids["after_slow"], flow.job_ids["after_both"]]
    )
    wait_finished(store, list(flow.job_ids.values()), timeout=30)
    assert states(client, flow.id) == {
        "quick": "completed",
        "slow": "cancelled",
        "after_slow": "cancelled",
        "after_both": "cancelled",
    }
    assert store.get(flow.job_ids["after_both"]).started_at is None  # type: ignore[union-attr]
    with pytest.raises(Exception, match="no flow with id 'nope'"):
        client.cancel_flow("nope")


def test_a_diamond_and_a_fan_in_completed_by_four_processes_at_once_release_each_child_once(
    client: JobsClient, store: JobStore, spawn_worker: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "effects"
    folder.mkdir()
    # The parents all sleep the same time, so that they end together in different processes.
    parents = [{"name": f"p{n}", "type": "effect", "metadata": {"seconds": 1.0}} for n in range(12)]
    jobs = [
        *parents,
        {"name": "fan_in", "type": "effect", "depends_on": [p["name"] for p in parents]},
        {"name": "top", "type": "effect", "metadata": {"seconds": 0.5}},
        {"name": "left", "type": "effect", "metadata": {"seconds": 0.5}, "depends_on": ["top"]},
        {"name": "right", "type": "effect", "metadata": {"seconds": 0.5}, "depends_on": ["top"]},
        {"name": "bottom", "type": "effect", "depends_on": ["left", "right"]},
    ]
    rounds = 3
    flows = [
        client.flow(jobs) for _ in range(rounds)
    ]  # written before the workers start: they race for all of it
    workers = [
        spawn_worker("--concurrency", "4", env={"JOBS_TEST_EFFECTS_DIR": str(folder)})
        for _ in range(4)
    ]
    every = [job_id for flow in flows for job_id in flow.job_ids.values()]
    done = wait_finished(store, every, timeout=90)
    assert {job.status for job in done.values()} == {Status.COMPLETED}
    ran = effects(folder)
    assert {job_id: ran[job_id] for job_id in every} == dict.fromkeys(
        every, 1
    )  # every job, children included, ran once
    for flow in flows:
        fan_in, bottom = done[flow.job_ids["fan_in"]], done[flow.job_ids["bottom"]]
        assert fan_in.attempts == 1 and bottom.attempts == 1
        assert fan_in.started_at >= max(done[flow.job_ids[f"p{n}"]].completed_at for n in range(12))  # type: ignore[operator, type-var]
    # The parents ended in different processes (otherwise this proves nothing about races).
    holders = {
        done[flow.job_ids[f"p{n}"]].raw["lease"]["holder"] for flow in flows for n in range(12)
    }
    assert len(holders) >= 3, holders
    for worker in workers:
        worker.signal(signal.SIGTERM)


def test_a_process_killed_between_a_parents_end_and_the_release_is_repaired_by_the_tick(
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    spawn_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "effects"
    folder.mkdir()
    flow = client.flow(
        [
            {"name": "parent", "type": "effect"},
            {"name": "child", "type": "effect", "depends_on": ["parent"]},
            {"name": "other", "type": "effect", "depends_on": ["parent"]},
        ]
    )
    worker = spawn_worker(
        "--concurrency",
        "1",
        env={"JOBS_TEST_EFFECTS_DIR": str(folder), "JOBS_TEST_KILL_BEFORE_RELEASE": "1"},
    )
    assert worker.wait(30) == -signal.SIGKILL
    parent = store.get(flow.job_ids["parent"])
    assert (
        parent is not None
        and parent.status is Status.COMPLETED
        and parent.raw["dependentsSettled"] is False
    )  # the obligation, written with the end
    assert states(client, flow.id) == {
        "parent": "completed",
        "child": "blocked",
        "other": "blocked",
    }

    monkeypatch.setattr(
        "jobs_lib.engine.followups.REPAIR_GRACE_SECONDS", 0.0
    )  # the tick need not wait for the dead process
    from . import handlers_for_tests  # noqa: F401 - registers "effect" in the default registry

    if "effect" not in registry:
        spec = default_registry.get("effect")
        assert spec is not None
        registry.register(spec)
    monkeypatch.setenv("JOBS_TEST_EFFECTS_DIR", str(folder))
    summary = Functions(App(store.settings, registry=registry, runtime="function")).tick()
    assert summary["flows"] == {"released": 2, "ended": 0}
    done = wait_finished(store, list(flow.job_ids.values()), timeout=10)  # and this tick ran them
    assert {job.status for job in done.values()} == {Status.COMPLETED}
    assert effects(folder) == Counter({job_id: 1 for job_id in flow.job_ids.values()})
    assert store.get(flow.job_ids["parent"]).raw["dependentsSettled"] is True  # type: ignore[union-attr]


def test_the_created_event_function_runs_the_jobs_a_run_released(
    client: JobsClient, store: JobStore, registry: HandlerRegistry
) -> None:
    registry.handler("hop")(lambda ctx: ctx.parent_results)
    flow = client.flow(
        [
            {"name": "a", "type": "hop"},
            {"name": "b", "type": "hop", "depends_on": ["a"]},
            {"name": "c", "type": "hop", "depends_on": ["b"]},
        ]
    )
    engine = Engine(JobStore(store.settings), registry, runtime="function")
    try:
        root = store.get(flow.job_ids["a"])
        assert root is not None
        assert (
            run_created(engine, root) == "completed"
        )  # the created-event for "a"; none comes for b and c
    finally:
        engine.close()
    jobs = {job.flow_name: job for job in client.flow_jobs(flow.id)}
    assert {name: job.status for name, job in jobs.items()} == dict.fromkeys(
        "abc", Status.COMPLETED
    )
    assert jobs["c"].result == {"b": {"a": {}}}


def test_a_fan_out_of_2000_jobs_is_created_and_drained(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    registry.handler("fan_root")(lambda ctx: {"batches": 2_000})
    registry.handler("fan_leaf")(lambda ctx: ctx.metadata["n"])
    jobs = [
        {"name": "root", "type": "fan_root"},
        *(
            {"name": f"leaf{n}", "type": "fan_leaf", "metadata": {"n": n}, "depends_on": ["root"]}
            for n in range(2_000)
        ),
    ]
    with pytest.raises(ConfigurationError, match="pass atomic=False"):
        client.flow(jobs)
    flow = client.flow(jobs, atomic=False)
    assert store.count_matching(status="blocked", job_type="fan_leaf") == 2_000
    assert store.count_matching(status="pending", job_type="fan_root") == 1
    worker_factory(concurrency=16)
    wait_for(
        lambda: store.count_matching(status="completed", job_type="fan_leaf") == 2_000,
        240,
        1.0,
        "the 2,000 leaves to complete",
    )
    assert store.count_matching(status="blocked", job_type="fan_leaf") == 0
    assert store.get(flow.job_ids["root"]).raw["dependentsSettled"] is True  # type: ignore[union-attr]
    sample = store.get(flow.job_ids["leaf1999"])
    assert sample is not None and sample.result == 1999 and sample.attempts == 1
