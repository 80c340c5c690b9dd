"""End-to-end demo of airflow-graphile: `python -m demo` (or `make demo`) from the repo root.

Act 1 seeds a throwaway Graphile Worker queue, crashes a real worker, runs the DAG in
``demo/dags/graphile_worker_demo.py`` with ``dag.test()`` and prints the queue before and
after. Act 2 (``demo/rescue.py``) crashes one of two workers that write heartbeats and runs
the example DAG ``example_dags/graphile_worker_unlock_crashed.py``, which unlocks the jobs
of the dead worker only.
"""
