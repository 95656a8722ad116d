"""In-process sources: calls, exceptions, threads and tasks, logs, runtime metrics."""
