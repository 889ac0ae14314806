"""Telemetry as operators see it: a Prometheus scrape, in-memory metrics and spans, log fields,
probes."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from jobs_lib import App, JobsClient, Settings, Status
from jobs_lib.app import load_handler_modules
from jobs_lib.devstack.emulator import Emulator, free_port
from jobs_lib.functions import Functions
from jobs_lib.observability.telemetry import Telemetry
from jobs_lib.store import JobStore

from .conftest import (
    PROJECT,
    ROOT,
    TESTS,
    WorkerProcess,
    serve_main,
    start_emulator,
    wait_finished,
    wait_for,
)
from .test_functions import event_body, event_headers, scheduler_headers

MAIN = str(ROOT / "functions" / "main.py")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics, parsed with prometheus_client: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(
                sorted(
                    (k, v)
                    for k, v in sample.labels.items()
                    if k in ("type", "outcome", "runtime", "le")
                )
            )
            samples[(sample.name, labels)] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted({"runtime": "worker", **labels}.items())))
    return samples.get(key, 0.0)


def test_a_scrape_of_a_workers_metrics_counts_every_outcome(
    client: JobsClient, store: JobStore, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    good = [client.enqueue("noop", {}).id for _ in range(6)]
    flaky = [client.enqueue("flaky_once", {}).id for _ in range(2)]
    poison = [client.enqueue("ghost_type", {}).id for _ in range(2)] + [
        client.enqueue("process_notifications", {"targetUsers": "not-a-list"}).id
    ]
    port = free_port()
    worker = spawn_worker("--metrics-port", str(port), "--concurrency", "4")
    jobs = wait_finished(store, good + flaky + poison, timeout=60)
    assert [jobs[j].status for j in good + flaky] == [Status.COMPLETED] * 8 and all(
        jobs[j].status is Status.FAILED for j in poison
    )

    def settled() -> dict[Any, float] | None:
        samples = scrape(port)
        return (
            samples
            if value(samples, "jobs_failed_total", type="ghost_type", outcome="invalid_job") == 2
            and value(samples, "jobs_completed_total", type="flaky_once") == 2
            else None
        )

    samples = wait_for(settled, 15, 0.2, "the scrape to show every outcome")
    expected = {
        ("jobs_started_total", (("type", "noop"),)): 6,
        ("jobs_started_total", (("type", "flaky_once"),)): 4,
        ("jobs_started_total", (("type", "process_notifications"),)): 1,
        ("jobs_started_total", (("type", "ghost_type"),)): 0,  # poison settled without a start
        ("jobs_completed_total", (("type", "noop"),)): 6,
        ("jobs_completed_total", (("type", "flaky_once"),)): 2,
        ("jobs_retried_total", (("type", "flaky_once"),)): 2,
        ("jobs_failed_total", (("outcome", "invalid_job"), ("type", "ghost_type"))): 2,
        ("jobs_failed_total", (("outcome", "invalid_input"), ("type", "process_notifications"))): 1,
        ("jobs_dead_lettered_total", (("type", "noop"),)): 0,
        ("jobs_cancelled_total", (("type", "noop"),)): 0,
        ("jobs_recovered_total", (("type", "noop"),)): 0,
        ("job_run_seconds_count", (("outcome", "completed"), ("type", "noop"))): 6,
        ("job_run_seconds_count", (("outcome", "retried"), ("type", "flaky_once"))): 2,
        ("job_run_seconds_count", (("outcome", "completed"), ("type", "flaky_once"))): 2,
        ("job_run_seconds_count", (("outcome", "failed"), ("type", "process_notifications"))): 1,
        ("job_queue_seconds_count", (("type", "noop"),)): 6,
        ("job_queue_seconds_count", (("type", "flaky_once"),)): 4,
        ("job_end_to_end_seconds_count", (("outcome", "completed"), ("type", "noop"))): 6,
        ("job_end_to_end_seconds_count", (("outcome", "completed"), ("type", "flaky_once"))): 2,
        ("job_end_to_end_seconds_count", (("outcome", "failed"), ("type", "ghost_type"))): 2,
        ("jobs_in_progress", (("type", "noop"),)): 0,
    }
    got = {key: value(samples, key[0], **dict(key[1])) for key in expected}
    assert got == expected
    # Each histogram's +Inf bucket holds every observation, and the buckets only grow.
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "job_run_seconds_bucket" and ("type", "noop") in labels
    )
    assert buckets[-1] == (float("inf"), 6) and all(
        a[1] <= b[1] for a, b in itertools.pairwise(buckets)
    )
    # The queue gauges exist for the registered types (as last counted: at most the 6 noop jobs due
    # at start).
    assert (
        0 <= value(samples, "jobs_due", type="noop") <= 6
        and ("jobs_oldest_due_seconds", (("runtime", "worker"), ("type", "noop"))) in samples
    )
    assert worker.process.poll() is None


def test_the_queue_gauges_count_due_jobs_and_the_oldest_wait(
    client: JobsClient, store: JobStore, registry: Any, engine_factory: Callable[..., Any]
) -> None:
    from jobs_lib.worker import Worker

    registry.handler("gauged")(lambda ctx: None)
    reader = InMemoryMetricReader()
    telemetry = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]))
    for _ in range(3):
        client.enqueue("gauged", {})
    oldest = client.enqueue("gauged", {})
    store.ref(oldest.id).update({"scheduledFor": store.now() - timedelta(minutes=5)})
    client.enqueue(
        "gauged", {}, scheduled_for=store.now() + timedelta(hours=1)
    )  # not due: not counted
    Worker(engine_factory(telemetry=telemetry), schedules=False).record_queue_stats()
    points = gauge_points(reader)
    assert points[("jobs_due", "gauged")] == 4
    assert 300 <= points[("jobs_oldest_due", "gauged")] < 400
    assert points[("jobs_due", "process_notifications")] == 0  # a registered type with nothing due


def gauge_points(reader: InMemoryMetricReader) -> dict[tuple[str, str], float]:
    """The metrics read so far by (name, type)."""
    return {
        (name, dict(labels).get("type", "")): value
        for (name, labels), value in metric_points(reader).items()
    }


def metric_points(
    reader: InMemoryMetricReader,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    out[
                        (
                            metric.name,
                            tuple(sorted((k, str(v)) for k, v in point.attributes.items())),
                        )
                    ] = getattr(point, "value", None) if hasattr(point, "value") else point.count
    return out


@pytest.fixture
def function_instances(store: JobStore) -> Iterator[Callable[[str, str, Telemetry], Any]]:
    """functions/main.py served by functions-framework, its jobs_lib built with the given
    telemetry."""
    load_handler_modules("tests.handlers_for_tests")
    made: list[Functions] = []

    def serve(target: str, signature: str, telemetry: Telemetry) -> Any:
        http = serve_main(target, signature).test_client()
        instance = Functions(
            App(Settings(project=PROJECT), runtime="function", telemetry=telemetry)
        )
        sys.modules["jobs_lib.deploy.entrypoints"].jobs = instance  # what main.py's functions call
        made.append(instance)
        return http

    yield serve
    for instance in made:
        instance.close()


def test_the_created_event_function_and_the_tick_record_the_same_metrics(
    function_instances: Callable[[str, str, Telemetry], Any], client: JobsClient, store: JobStore
) -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry("function", meter_provider=MeterProvider(metric_readers=[reader]))
    created, tick = (
        function_instances("on_job_created", "cloudevent", telemetry),
        function_instances("tick", "http", telemetry),
    )
    good = client.enqueue("noop", {})
    poison = client.enqueue("ghost_type", {})
    for job in (good, poison):
        assert (
            created.post(
                "/", headers=event_headers(job.id), data=event_body(store, job.id, raw=True)
            ).status_code
            == 200
        )
    delayed = client.enqueue(
        "flaky_once", {}
    )  # left to the tick: its first attempt fails, the retry is due at once
    assert tick.post("/", headers=scheduler_headers()).status_code == 200
    assert (
        store.get(good.id).status is Status.COMPLETED
        and store.get(delayed.id).status is Status.COMPLETED
    )  # type: ignore[union-attr]
    points = metric_points(reader)

    def at(name: str, job_type: str, **extra: str) -> float:
        return points.get(
            (name, tuple(sorted({"type": job_type, "runtime": "function", **extra}.items()))), 0
        )

    assert at("jobs_started", "noop") == 1 and at("jobs_completed", "noop") == 1
    assert at("jobs_failed", "ghost_type", outcome="invalid_job") == 1
    assert (
        at("jobs_started", "flaky_once") == 2
        and at("jobs_retried", "flaky_once") == 1
        and at("jobs_completed", "flaky_once") == 1
    )
    assert (
        at("job_run", "noop", outcome="completed") == 1
        and at("job_end_to_end", "flaky_once", outcome="completed") == 1
    )
    assert (
        at("jobs_enqueued", "noop") == 0
    )  # enqueued by the test's own client, which has no meter of this reader


def test_enqueue_counts_and_stores_the_callers_trace(settings: Settings) -> None:
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    app = App(
        settings,
        telemetry=Telemetry(
            meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tracer_provider
        ),
    )
    with tracer_provider.get_tracer("test").start_as_current_span("request") as request:
        job = app.client.enqueue("noop", {})
    context = request.get_span_context()
    assert job.raw["traceparent"].startswith(
        f"00-{context.trace_id:032x}-{context.span_id:016x}-"
    )  # then the trace flags
    assert "traceparent" not in app.client.enqueue("noop", {}).raw  # no span active, nothing stored
    assert metric_points(reader)[("jobs_enqueued", (("runtime", "worker"), ("type", "noop")))] == 2


def run_traced_worker(
    emulator: Emulator, tmp_path: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """tests/telemetry_worker.py in another process: its spans and its JSON log lines."""
    out = tmp_path / "spans.jsonl"
    env = {
        "FIRESTORE_EMULATOR_HOST": emulator.address,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "PYTHONPATH": f"{TESTS}:{ROOT}",
        "JOBS_HANDLERS": "handlers_for_tests",
        "JOBS_CLEANUP_CRON": "off",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, str(TESTS / "telemetry_worker.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [json.loads(line) for line in out.read_text().splitlines()], lines


def test_the_enqueuers_trace_is_the_parent_of_the_run_in_another_process(
    emulator: Emulator, client: JobsClient, store: JobStore, tmp_path: Path
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with provider.get_tracer("test").start_as_current_span("checkout request") as request:
        good = client.enqueue("noop", {})
        flaky = client.enqueue("flaky_once", {})
    store.ref("bad-trace").set(
        {"type": "noop", "status": "pending", "metadata": {}, "traceparent": "00-not-a-trace-01"}
    )
    worker_spans, log_lines = run_traced_worker(emulator, tmp_path)
    assert (
        wait_finished(store, [good.id, flaky.id, "bad-trace"])[good.id].status is Status.COMPLETED
    )
    trace_id, request_span = (
        f"{request.get_span_context().trace_id:032x}",
        f"{request.get_span_context().span_id:016x}",
    )
    runs = {
        (s["attributes"]["jobs.job_id"], s["attributes"]["jobs.attempt"]): s
        for s in worker_spans
        if s["name"].startswith("job ")
    }
    # First attempts continue the enqueuer's trace, their parent the enqueuer's span.
    for job_id in (good.id, flaky.id):
        assert (runs[(job_id, 1)]["traceId"], runs[(job_id, 1)]["parentSpanId"]) == (
            trace_id,
            request_span,
        )
    # A retry starts a trace of its own, linked to the enqueuer's span.
    retry = runs[(flaky.id, 2)]
    assert retry["traceId"] != trace_id and retry["parentSpanId"] is None
    assert retry["links"] == [{"traceId": trace_id, "spanId": request_span}]
    assert runs[(flaky.id, 1)]["status"] == "ERROR" and retry["status"] != "ERROR"
    # The claim, the handler and the recording are children of the attempt's span.
    children = {
        s["name"] for s in worker_spans if s["parentSpanId"] == runs[(good.id, 1)]["spanId"]
    }
    assert children == {"firestore claim", "handler noop", "firestore record"}
    # A malformed traceparent: the job still ran, in a new trace, with a warning.
    bad = runs[("bad-trace", 1)]
    assert (
        bad["parentSpanId"] is None
        and bad["traceId"] != trace_id
        and store.get("bad-trace").status is Status.COMPLETED
    )  # type: ignore[union-attr]
    assert any(
        line.get("event") == "trace_invalid" and line.get("jobId") == "bad-trace"
        for line in log_lines
    )
    # Every log line about the job carries its trace, as Cloud Logging reads it, and the seeds'
    # correlationId.
    about_good = [line for line in log_lines if line.get("jobId") == good.id]
    assert {line["event"] for line in about_good} >= {"job_claimed", "job_completed"}
    for line in about_good:
        assert line["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{trace_id}"
        assert (
            line["correlationId"] == trace_id
            and line["logging.googleapis.com/spanId"] == runs[(good.id, 1)]["spanId"]
        )


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_probes_flip_when_firestore_goes_away(
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    """The worker reaches its own emulator through a TCP proxy; stopping the emulator and cutting
    the proxy leaves it no Firestore at all (nothing else can answer its calls)."""
    from .chaos.proxy import Proxy

    own = start_emulator()
    proxy = Proxy(own.host, own.port)
    try:
        port = free_port()
        worker = spawn_worker(
            "--health-port", str(port), emu=own, env={"FIRESTORE_EMULATOR_HOST": proxy.address}
        )
        wait_for(
            lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200 if _listening(port) else False,
            30,
            0.2,
            "the worker to be ready",
        )
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        own.stop()
        proxy.cut()
        assert own.process.poll() is not None  # the emulator is gone
        seen: list[Any] = []

        def not_ready() -> Any:
            seen.append(get(f"http://127.0.0.1:{port}/readyz"))
            return seen[-1][0] == 503 and seen[-1]

        # Formatted only if the wait fails: what the probe said, what the worker logged.
        class Diagnosis:
            def __str__(self) -> str:
                return (
                    f"readiness to fail once the emulator is gone (last answers: "
                    f"{seen[-3:]}; worker log: "
                    f"{worker.log_path.read_text(errors='replace')[-1500:]})"
                )

        _status, body = wait_for(not_ready, 40, 0.5, Diagnosis())  # type: ignore[arg-type]
        assert body["ok"] is False and body["firestoreAnsweredSecondsAgo"] > body["limitSeconds"]
        assert (
            get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        )  # the process itself is fine: no restart
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404
        assert worker.process.poll() is None
    finally:
        proxy.close()
        own.stop()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_an_unreachable_exporter_never_blocks_a_job(
    client: JobsClient, store: JobStore, worker_factory: Callable[..., Any]
) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # A "collector" that accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                accepted.append(silent.accept()[0])
        except OSError:  # closed at the end of the test
            return

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=2), schedule_delay_millis=100
        )
    )
    meter_provider = MeterProvider(
        metric_readers=[
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=2),
                export_interval_millis=200,
            )
        ]
    )
    try:
        worker_factory(
            telemetry=Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider)
        )
        ids = [
            client.enqueue("process_notifications", {"targetUsers": ["u"]}).id for _ in range(20)
        ]
        done = wait_finished(store, ids, timeout=30)
        assert all(job.status is Status.COMPLETED for job in done.values())
        wait_for(lambda: accepted, 10, 0.1, "the exporters to try their collector")
    finally:
        meter_provider.shutdown(timeout_millis=3000)
        tracer_provider.shutdown()
        silent.close()
        for conn in accepted:
            conn.close()


def test_jobs_monitoring_setup_prints_metrics_and_alert_policies() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobs_lib", "monitoring", "setup", "--project", "my-project"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    files = dict(_heredocs(result.stdout))
    commands = [line for line in result.stdout.splitlines() if line.startswith("gcloud ")]
    assert [c.split()[4] for c in commands if c.startswith("gcloud logging metrics create")] == [
        "jobs_completed",
        "jobs_failed",
        "jobs_retried",
        "jobs_started",
        "job_queue_ms",
    ]
    assert sum("monitoring policies create --project=my-project" in c for c in commands) == 2
    failed = json.loads(files["jobs_failed.json"])
    assert failed["filter"] == 'jsonPayload.event=("job_failed")' and failed["labelExtractors"] == {
        "type": "EXTRACT(jsonPayload.type)"
    }
    assert (
        json.loads(files["job_queue_ms.json"])["valueExtractor"] == "EXTRACT(jsonPayload.queueMs)"
    )
    lag = json.loads(files["jobs-queue-lag.json"])["conditions"][0][
        "conditionPrometheusQueryLanguage"
    ]["query"]
    assert "logging_googleapis_com:user_job_queue_ms_bucket" in lag
    rate = json.loads(files["jobs-failure-rate.json"])["conditions"][0][
        "conditionPrometheusQueryLanguage"
    ]["query"]
    assert "user_jobs_failed" in rate and "user_jobs_completed" in rate


def _heredocs(text: str) -> Iterator[tuple[str, str]]:
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("cat > ") and line.endswith("<<'EOF'"):
            name = line.split()[2]
            body = []
            for inner in lines:
                if inner == "EOF":
                    break
                body.append(inner)
            yield name, "\n".join(body)


def test_traces_need_no_sdk_and_cost_nothing_without_one(
    client: JobsClient, store: JobStore
) -> None:
    """Without an SDK the API's tracer is a no-op: no traceparent is invented, jobs run as
    before."""
    assert trace.get_current_span().get_span_context().is_valid is False
    job = client.enqueue("noop", {})
    assert "traceparent" not in job.raw
    assert not Telemetry().recording_metrics


def test_the_rest_api_stores_the_callers_traceparent_header(
    store: JobStore, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from werkzeug.test import Client

    from jobs_lib.api import JobsApi

    from .test_rules import id_token

    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    http = Client(JobsApi(JobsClient(store=store, registry=registry)))
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {
        "Authorization": f"Bearer {id_token('alice', permissions=['jobs.create'])}",
        "traceparent": caller,
    }
    created = http.post(
        "/v1/jobs",
        json={"type": "process_notifications", "metadata": {"targetUsers": ["u"]}},
        headers=headers,
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    assert store.get(created.get_json()["job"]["id"]).raw["traceparent"] == caller  # type: ignore[union-attr]
    headers["traceparent"] = "garbage"
    plain = http.post(
        "/v1/jobs",
        json={"type": "process_notifications", "metadata": {"targetUsers": ["u"]}},
        headers=headers,
    )
    assert (
        plain.status_code == 201
        and "traceparent" not in store.get(plain.get_json()["job"]["id"]).raw
    )  # type: ignore[union-attr]
