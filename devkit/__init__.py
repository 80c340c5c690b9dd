"""The development harness of airflow-graphile, shared by the tests, the demo and the benchmarks.

It is not part of the provider and is not shipped in the wheel (packaging includes only
``airflow_graphile``). One module per concern:

- ``paths``: where things are in the repository.
- ``versions``: the Graphile Worker versions under test and the schema revision of each.
- ``process``: printing, SIGTERM handling, waiting, stopping child processes.
- ``ports``: a free TCP port.
- ``postgres``: finding a PostgreSQL server (or starting a throwaway cluster), creating,
  copying and dropping databases.
- ``graphile``: the real Graphile Worker CLI and worker processes, and ``GraphileDB``, a
  database with Graphile Worker's schema.
- ``selection``: job fixtures shaped like Graphile Worker's own tests.
- ``crash``: two real workers, one of them about to be killed: what a rescue is for.
- ``airflow_home``: a throwaway Airflow home, its connections and ``airflow db migrate``.
- ``dag_runs``: running DAGs for real with ``dag.test()`` and reading back what happened.
- ``standalone``: a real ``airflow standalone`` and a client of its REST API.
"""
