"""The Graphile Worker versions under test, their npm packages and schema revisions."""

from __future__ import annotations

# The versions every admin function is tested on, oldest first.
VERSIONS: tuple[str, ...] = ("0.16.6", "0.17.3", "0.18.0")
# The version the demo, the benchmarks and the end-to-end tests run.
LATEST_VERSION = VERSIONS[-1]
# Installed only to check that a schema older than 0.16 is refused.
OLD_VERSION = "0.15.1"
# The npm alias each version is installed under (graphile/package.json).
PACKAGES: dict[str, str] = {
    OLD_VERSION: "graphile-worker-0.15",
    "0.16.6": "graphile-worker-0.16",
    "0.17.3": "graphile-worker-0.17",
    "0.18.0": "graphile-worker-0.18",
}
# The schema revision (max(id) of <schema>.migrations) that each version installs.
REVISIONS: dict[str, int] = {"0.16.6": 18, "0.17.3": 19, "0.18.0": 20}
# Graphile Worker's default schema (its --schema option).
DEFAULT_SCHEMA = "graphile_worker"
# The heartbeat plugin's default table (worker-plugin/).
DEFAULT_HEARTBEAT_SCHEMA = "public"
DEFAULT_HEARTBEAT_TABLE = "graphile_worker_heartbeats"
