"use strict";
// Unit tests of the exported helpers (no database).

const assert = require("node:assert/strict");
const { describe, it } = require("node:test");

const plugin = require("..");

describe("options and helpers", () => {
  it("makeHeartbeatPreset puts the given options in the airflowHeartbeat scope", () => {
    const preset = plugin.makeHeartbeatPreset({ intervalMs: 500, table: "beats", schema: undefined });
    assert.deepEqual(preset.plugins, [plugin.HeartbeatPlugin]);
    assert.deepEqual(preset.airflowHeartbeat, { intervalMs: 500, table: "beats" });
    assert.deepEqual(plugin.HeartbeatPreset.plugins, [plugin.HeartbeatPlugin]);
    assert.deepEqual(plugin.DEFAULTS, {
      schema: "public",
      table: "graphile_worker_heartbeats",
      intervalMs: 1000,
    });
  });

  it("rejects bad options at configuration time", () => {
    assert.throws(() => plugin.makeHeartbeatPreset({ intervalMs: 0 }), /intervalMs/);
    assert.throws(() => plugin.makeHeartbeatPreset({ intervalMs: "soon" }), /intervalMs/);
    assert.throws(() => plugin.makeHeartbeatPreset({ table: "" }), /table/);
    assert.throws(() => plugin.makeHeartbeatPreset({ interval: 5 }), /Unknown .*interval/);
  });

  it("knows which id each version writes into locked_by", () => {
    assert.equal(plugin.lockedByPoolId("0.16.6"), false);
    assert.equal(plugin.lockedByPoolId("0.16.0"), false);
    assert.equal(plugin.lockedByPoolId("0.17.0"), true);
    assert.equal(plugin.lockedByPoolId("0.18.0"), true);
    assert.equal(plugin.lockedByPoolId("1.0.0"), true);
  });

  it("quotes identifiers", () => {
    assert.equal(plugin.quoteIdentifier("a"), '"a"');
    assert.equal(plugin.quoteIdentifier('we"ird'), '"we""ird"');
  });

  it("is a plain graphile-config plugin", () => {
    const { HeartbeatPlugin } = plugin;
    assert.equal(typeof HeartbeatPlugin.name, "string");
    assert.equal(typeof HeartbeatPlugin.version, "string");
    assert.equal(typeof HeartbeatPlugin.worker.hooks.startWorker, "function");
    assert.equal(typeof HeartbeatPlugin.worker.hooks.stopWorker, "function");
    assert.equal(typeof HeartbeatPlugin.worker.middleware.poolGracefulShutdown, "function");
  });
});
