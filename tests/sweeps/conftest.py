"""Fixtures of the sweep tests: ``postgres_url``, a throwaway PostgreSQL server."""

from tests.helpers.postgres import postgres_url  # noqa: F401 (a fixture)
