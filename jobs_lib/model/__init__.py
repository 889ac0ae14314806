"""The runner's model: the job as a typed value, outcomes, the pure decision after an attempt,
backoff, times, cron. No I/O, and nothing of the package but `errors`: a test holds it so."""
