"""Stand-alone studies, each run by hand with `python -m bench.studies.<name>`.

`latency` (uncached calls), `cache` (hits and a slow model), `runs` (Redis commands per run),
`metrics_overhead`, `soak` (50k calls, reliability report), `profile` (cProfile inside a server
by layer), `ab` (hits of two worktrees, interleaved), `relay` (uncached streams of two worktrees,
interleaved: merged deltas, CPU per stream), `leases`, `first_event`, `tracing`, `workers`,
`core_cost` and `tester_eval` (the offline tester against vendored PyPI packages' own test
suites; see docs/local-tester.md). The suite
(`make bench`) is `bench.suite`, with its cases in `bench/cases/`.
"""
