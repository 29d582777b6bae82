"""Alembic environment and versions for hetex (schema changes happen only here)."""
