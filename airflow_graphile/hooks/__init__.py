"""Hooks of the Graphile Worker provider."""
