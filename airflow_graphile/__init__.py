"""Apache Airflow provider for administering Graphile Worker job queues.

Importing this package is cheap: the hook, and with it psycopg, is imported
only when a task runs.
"""

from __future__ import annotations

__version__ = "0.1.0"
