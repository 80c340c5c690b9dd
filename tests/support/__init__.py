"""Test helpers: a PostgreSQL server and Graphile Worker versions."""
