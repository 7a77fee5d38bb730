"""Stand-alone studies, each run by hand with `python -m bench.studies.<name>`.

`latency` (uncached calls), `cache` (hits and a slow model), `runs` (Redis commands per run),
`metrics_overhead`, `soak` (50k calls, reliability report), `profile` (cProfile inside a server
by layer) and `ab` (hits of two worktrees, interleaved). The suite (`make bench`) is
`bench.suite`, with its cases in `bench/cases/`.
"""
