"""Benchmarks: failover time, data-plane overhead, hitless reloads and program cost, measured
in the namespace lab and written to docs/benchmarks.md (scripts/bench)."""
