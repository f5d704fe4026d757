"""Alembic migration environment (a package so it ships inside the wheel)."""
