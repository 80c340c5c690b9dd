from __future__ import annotations

import pytest

from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB


@pytest.fixture
def hook(gw_db: GraphileDB) -> GraphileWorkerHook:
    return GraphileWorkerHook(graphile_worker_conn_id=gw_db.conn_id)
