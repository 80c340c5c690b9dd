// Graphile Worker config that enables the airflow-graphile heartbeat plugin
// (worker-plugin/). Not named graphile.config.*, so that only workers started
// with `--config <this file>` load it (WorkerProcess(heartbeat=True) in
// tests/support/graphile.py). Options come from the environment:
// HEARTBEAT_SCHEMA (default public), HEARTBEAT_TABLE (default
// graphile_worker_heartbeats), HEARTBEAT_INTERVAL_MS (default 10000).
const { makeHeartbeatPreset } = require("../../worker-plugin");

const env = process.env;

module.exports = {
  extends: [
    makeHeartbeatPreset({
      schema: env.HEARTBEAT_SCHEMA || undefined,
      table: env.HEARTBEAT_TABLE || undefined,
      intervalMs: env.HEARTBEAT_INTERVAL_MS ? Number(env.HEARTBEAT_INTERVAL_MS) : undefined,
    }),
  ],
};
