"""Alembic environment and versions: the database *schema* migrations (not workload migration)."""
