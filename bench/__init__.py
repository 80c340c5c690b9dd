"""Benchmark scripts for airflow-graphile (run them from the repository root; see README.md)."""
