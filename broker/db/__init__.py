"""Database layer: engine from settings, embedded PostgreSQL, ORM models and repositories (I/O)."""
