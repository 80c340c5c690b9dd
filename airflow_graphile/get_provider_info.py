"""Provider metadata, read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_graphile import __version__


def get_provider_info() -> dict[str, Any]:
    """Return the provider-info dict Airflow uses to list the provider and its connection type."""
    return {
        "package-name": "airflow-graphile",
        "name": "Graphile Worker",
        "description": "Administer `Graphile Worker <https://worker.graphile.org>`__ job queues "
        "in PostgreSQL: complete, fail, reschedule and unlock jobs, and clean up.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Graphile Worker",
                "external-doc-url": "https://worker.graphile.org",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Graphile Worker",
                "python-modules": ["airflow_graphile.hooks.graphile_worker"],
            }
        ],
        "operators": [
            {
                "integration-name": "Graphile Worker",
                "python-modules": [
                    "airflow_graphile.operators.complete_jobs",
                    "airflow_graphile.operators.permanently_fail_jobs",
                    "airflow_graphile.operators.reschedule_jobs",
                    "airflow_graphile.operators.force_unlock_workers",
                    "airflow_graphile.operators.rescue",
                    "airflow_graphile.operators.cleanup",
                    "airflow_graphile.operators.heartbeat_check",
                    "airflow_graphile.operators.queue_stats",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Graphile Worker",
                "python-modules": ["airflow_graphile.sensors.stuck_locks"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Graphile Worker",
                "python-modules": [
                    "airflow_graphile.triggers.stuck_locks",
                    "airflow_graphile.triggers.dead_lockers",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_graphile.hooks.graphile_worker.GraphileWorkerHook",
                "hook-name": "Graphile Worker",
                "connection-type": "graphile_worker",
                "ui-field-behaviour": {
                    "hidden-fields": [],
                    "relabeling": {"schema": "Database"},
                    "placeholders": {"port": "5432", "schema": "the database name"},
                },
                "conn-fields": {
                    "worker_schema": {
                        "label": "Worker schema",
                        "description": "The PostgreSQL schema Graphile Worker is installed in "
                        "(its --schema option). Default: graphile_worker.",
                        "schema": {"type": ["string", "null"], "default": "graphile_worker"},
                    }
                },
            }
        ],
    }
