// Graphile Worker config that enables the airflow-graphile heartbeat plugin
// (worker-plugin/). Not named graphile.config.*, so that only workers started
// with `--config <this file>` load it (WorkerProcess(heartbeat=True) in
// devkit/graphile.py). The preset is the one the plugin's own tests use, with
// its options from the environment: HEARTBEAT_SCHEMA (default public),
// HEARTBEAT_TABLE (default graphile_worker_heartbeats), HEARTBEAT_INTERVAL_MS
// (default 1000). The worker settings of those tests are left out.
const { extends: presets } = require("../../worker-plugin/fixtures/graphile.config.cjs");

module.exports = { extends: presets };
