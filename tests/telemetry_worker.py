"""A worker process that records its spans in memory and prints them as JSON lines when it stops.

Run by tests/test_telemetry.py: ``python tests/telemetry_worker.py OUT.jsonl`` with the emulator's
environment; it runs what is due (burst mode), then writes one JSON object per finished span.
"""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobs_lib import App
from jobs_lib.observability import logs

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

app = App()
logs.configure(app.settings.log_level, project=app.settings.project)
app.worker(burst=True, concurrency=4, poll_interval=0.05).run()
with open(sys.argv[1], "w") as out:
    for span in exporter.get_finished_spans():
        context = span.get_span_context()
        out.write(
            json.dumps(
                {
                    "name": span.name,
                    "traceId": format(context.trace_id, "032x"),
                    "spanId": format(context.span_id, "016x"),
                    "parentSpanId": format(span.parent.span_id, "016x") if span.parent else None,
                    "links": [
                        {
                            "traceId": format(link.context.trace_id, "032x"),
                            "spanId": format(link.context.span_id, "016x"),
                        }
                        for link in span.links
                    ],
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                }
            )
            + "\n"
        )
