"""`jobs monitoring setup`: Cloud Monitoring over the JSON log lines jobs_lib already writes.

Function instances are short-lived and cannot be scraped, and a team may want
dashboards before enabling the OpenTelemetry exporter. Cloud Logging can count
log lines into metrics: these log-based metrics read the ``event`` field of
the lines every worker and function writes (``job_completed``, ``job_failed``,
``job_retrying``, ``job_claimed`` with its ``queueMs``), labelled by job
``type``; two alert policies watch them (failure rate, queue lag). The
commands are printed, to read and run: nothing is applied from here.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LogMetric:
    """One log-based metric."""

    name: str
    description: str
    event: str | tuple[str, ...]
    value_field: str | None = None  # a distribution over this numeric field; else a counter

    def filter(self) -> str:
        events = (self.event,) if isinstance(self.event, str) else self.event
        return "jsonPayload.event=(" + " OR ".join(f'"{e}"' for e in events) + ")"

    def config(self) -> dict[str, Any]:
        """The LogMetric resource, as `gcloud logging metrics create --config-from-file` reads
        it."""
        descriptor: dict[str, Any] = {
            "metricKind": "DELTA",
            "valueType": "DISTRIBUTION" if self.value_field else "INT64",
            "unit": "ms" if self.value_field else "1",
            "labels": [{"key": "type", "valueType": "STRING", "description": "job type"}],
        }
        config: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "filter": self.filter(),
            "metricDescriptor": descriptor,
            "labelExtractors": {"type": "EXTRACT(jsonPayload.type)"},
        }
        if self.value_field:
            config["valueExtractor"] = f"EXTRACT(jsonPayload.{self.value_field})"
            config["bucketOptions"] = {
                "exponentialBuckets": {"numFiniteBuckets": 32, "growthFactor": 2, "scale": 1}
            }
        return config


METRICS = (
    LogMetric("jobs_completed", "jobs_lib: jobs that ended completed", "job_completed"),
    LogMetric("jobs_failed", "jobs_lib: jobs that ended failed", "job_failed"),
    LogMetric("jobs_retried", "jobs_lib: failed attempts sent back to pending", "job_retrying"),
    LogMetric("jobs_started", "jobs_lib: attempts started", ("job_claimed", "job_recovered")),
    LogMetric(
        "job_queue_ms",
        "jobs_lib: scheduledFor (or createdAt) to start, in ms",
        ("job_claimed", "job_recovered"),
        "queueMs",
    ),
)


def alert_policies(
    project: str, failure_ratio: float = 0.05, lag_seconds: float = 300.0
) -> list[dict[str, Any]]:
    """Two alert policies (PromQL over the log-based metrics): failure rate and queue lag, per
    type."""
    user = "logging_googleapis_com:user_"
    failure = (
        f"sum by (type) (rate({user}jobs_failed[10m])) / "
        f"(sum by (type) (rate({user}jobs_failed[10m])) + sum by (type) "
        f"(rate({user}jobs_completed[10m]))) > {failure_ratio:g}"
    )
    lag = (
        f"histogram_quantile(0.95, sum by (type, le) "
        f"(rate({user}job_queue_ms_bucket[10m]))) > {lag_seconds * 1000:g}"
    )
    return [
        {
            "displayName": "jobs_lib: failure rate",
            "documentation": {
                "content": f"More than {failure_ratio:.0%} of a job type's jobs failed over 10 "
                f"minutes. `jobs list --status failed --type TYPE` shows them; `jobs "
                f"retry --failed --type TYPE` sends them back.",
                "mimeType": "text/markdown",
            },
            "combiner": "OR",
            "conditions": [
                {
                    "displayName": "failed / (failed + completed) per type",
                    "conditionPrometheusQueryLanguage": {
                        "query": failure,
                        "duration": "300s",
                        "evaluationInterval": "60s",
                    },
                }
            ],
        },
        {
            "displayName": "jobs_lib: queue lag",
            "documentation": {
                "content": f"Jobs of a type waited more than {lag_seconds:g}s (p95) from due to "
                f"start: too few workers or instances, a paused type, or a full "
                f"concurrency limit. `jobs stats` and the console show the backlog.",
                "mimeType": "text/markdown",
            },
            "combiner": "OR",
            "conditions": [
                {
                    "displayName": "p95 queue time per type",
                    "conditionPrometheusQueryLanguage": {
                        "query": lag,
                        "duration": "300s",
                        "evaluationInterval": "60s",
                    },
                }
            ],
        },
    ]


def setup_commands(project: str) -> list[str]:
    """The shell commands that create the log-based metrics and the alert policies in `project`."""
    q = shlex.quote
    lines = [
        f"# Log-based metrics over jobs_lib's JSON log lines in project {project} (labelled by "
        f"job type)."
    ]
    for metric in METRICS:
        lines.append(
            f"cat > {metric.name}.json <<'EOF'\n{json.dumps(metric.config(), indent=2)}\nEOF"
        )
        lines.append(
            f"gcloud logging metrics create {metric.name} --project={q(project)} "
            f"--config-from-file={metric.name}.json"
        )
    lines.append("# Alert policies (add notification channels with --notification-channels=...).")
    for i, policy in enumerate(alert_policies(project)):
        name = ["jobs-failure-rate", "jobs-queue-lag"][i]
        lines.append(f"cat > {name}.json <<'EOF'\n{json.dumps(policy, indent=2)}\nEOF")
        lines.append(
            f"gcloud alpha monitoring policies create --project={q(project)} "
            f"--policy-from-file={name}.json"
        )
    return lines


__all__ = ["METRICS", "LogMetric", "alert_policies", "setup_commands"]
