"""What the server tells its operators: Prometheus metrics, and its log lines.

- `metrics.py`: the registry of every metric /metrics exports (the gRPC ones are recorded by
  `interceptors/metrics.py`).
- `agents.py`: the agent metrics, recorded from the events every run produces.
- `collectors.py`: values read at each scrape from the run journal, the cache and the database.
- `endpoint.py`: the HTTP server of /metrics.
- `logs.py`: logging setup, and URLs redacted from log lines.

Nothing is imported here: `logs` loads without prometheus-client or the agent core, so a process
that only logs (the workers' supervisor) stays small.
"""
