"""The engine: claim a job, run its handler, record the outcome; the worker's discovery, durable
runs, and what follows a job's end (flows, webhooks, schedules)."""
