"""The heartbeat plugin's own node tests, run against the same PostgreSQL as the rest."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devkit.postgres import PostgresServer

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "worker-plugin"

pytestmark = pytest.mark.worker


def test_node_test_suite_passes(pg_server: PostgresServer) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is required (see README)"
    result = subprocess.run(
        [node, "--test"],
        cwd=PLUGIN_DIR,
        env={**os.environ, "HEARTBEAT_TEST_DSN": pg_server.admin_dsn},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout
