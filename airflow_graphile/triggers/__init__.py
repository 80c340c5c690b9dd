"""Triggers of the Graphile Worker provider (run by Airflow's triggerer)."""
