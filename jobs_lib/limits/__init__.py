"""What may run now: concurrency slots, rate tokens and circuit breakers, each claimed in the same commit as the job."""
