"""End-to-end demo of airflow-graphile: `python -m demo` (or `make demo`) from the repo root.

Seeds a throwaway Graphile Worker queue worked by two real workers with heartbeats, kills
one with kill -9, then runs the three example DAGs of ``example_dags/`` with
``dag.test()``: ``graphile_worker_unlock_crashed`` (``demo/rescue.py``),
``graphile_worker_cleanup`` (``demo/cleanup.py``) and ``graphile_worker_admin`` as from its
trigger form (``demo/admin.py``), printing the queue after each.
"""
