"""Scheduled jobs: each takes a lock in PostgreSQL, is idempotent, and keeps its state in the database."""
