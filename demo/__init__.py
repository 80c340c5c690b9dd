"""End-to-end demo of airflow-graphile: `python -m demo` (or `make demo`) from the repo root.

It seeds a throwaway Graphile Worker queue, crashes a real worker, runs the DAG in
``demo/dags/graphile_worker_demo.py`` with ``dag.test()`` and prints the queue before
and after.
"""
