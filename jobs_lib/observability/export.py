"""Turning telemetry on: the OpenTelemetry SDK and its exporters (``pip install
'jobs_lib[telemetry]'``).

jobs_lib records through the OpenTelemetry API (`jobs_lib.observability.telemetry`); this
module, imported only when a setting asks for an exporter, installs the SDK's
providers for the process:

- ``prometheus`` (``JOBS_METRICS_EXPORTER=prometheus`` or ``jobs worker
  --metrics-port PORT``): the standard text format at ``/metrics`` on PORT,
  for long-lived workers that Prometheus can scrape.
- ``gcp``: Cloud Monitoring, pushed every 60 s (Cloud Monitoring takes at most
  one point per series every 5 s), for function instances that cannot be
  scraped; traces to Cloud Trace with ``JOBS_TRACES_EXPORTER=gcp``.
- ``otlp``: an OpenTelemetry collector over OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``).
- ``console``: JSON lines on stderr, for a look without a backend.

Exports run on background threads (periodic readers, batch span processors),
so a backend that cannot be reached never blocks or fails a job; it costs a
warning in the log.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace

from jobs_lib.errors import ConfigurationError

log = logging.getLogger("jobs_lib.telemetry")

_lock = threading.Lock()


@dataclass
class Exporting:
    """What `enable` installed: the providers, and the Prometheus endpoint's port if any."""

    meter_provider: Any = None
    tracer_provider: Any = None
    metrics_port: int | None = None
    readers: list[Any] = field(default_factory=list)

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        for provider in (self.meter_provider, self.tracer_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:  # an exporter failing at exit must not fail the process
                    log.warning("telemetry exporter did not shut down cleanly", exc_info=True)


def _sdk() -> Any:
    try:
        from opentelemetry.sdk import metrics as sdk_metrics
    except ImportError:
        raise ConfigurationError(
            "telemetry export needs the OpenTelemetry SDK: pip install 'jobs_lib[telemetry]'"
        ) from None
    return sdk_metrics


def enable(
    *,
    metrics_exporter: str = "none",
    traces_exporter: str = "none",
    metrics_port: int | None = None,
    service: str = "jobs_lib",
    project: str | None = None,
) -> Exporting:
    """Install the SDK providers and the chosen exporters for this process; returns what was
    installed.

    A process can install providers once (OpenTelemetry's rule); call this at start-up.
    """
    with _lock:
        sdk_metrics = _sdk()
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create(
            {"service.name": service, **({"gcp.project_id": project} if project else {})}
        )
        done = Exporting()
        if metrics_port:
            metrics_exporter = "prometheus"
        if metrics_exporter != "none":
            readers = [_metric_reader(metrics_exporter, project)]
            if metrics_exporter == "prometheus":
                from prometheus_client import start_http_server

                server, _thread = start_http_server(metrics_port or 9464, addr="0.0.0.0")
                done.metrics_port = int(server.server_address[1])
            done.meter_provider = sdk_metrics.MeterProvider(
                metric_readers=readers, resource=resource
            )
            done.readers = readers
            metrics.set_meter_provider(done.meter_provider)
        if traces_exporter != "none":
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            done.tracer_provider = TracerProvider(resource=resource)
            done.tracer_provider.add_span_processor(
                BatchSpanProcessor(_span_exporter(traces_exporter, project))
            )
            trace.set_tracer_provider(done.tracer_provider)
        return done


def _metric_reader(kind: str, project: str | None) -> Any:
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    if kind == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        return PrometheusMetricReader()
    if kind == "gcp":
        from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter

        return PeriodicExportingMetricReader(
            CloudMonitoringMetricsExporter(project_id=project), export_interval_millis=60_000
        )
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=15_000)
    if kind == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=15_000)
    raise ConfigurationError(
        f"unknown metrics exporter {kind!r}: use none, prometheus, gcp, otlp or console"
    )


def _span_exporter(kind: str, project: str | None) -> Any:
    if kind == "gcp":
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        return CloudTraceSpanExporter(project_id=project)  # type: ignore[no-untyped-call]
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ConfigurationError(f"unknown traces exporter {kind!r}: use none, gcp, otlp or console")


__all__ = ["Exporting", "enable"]
