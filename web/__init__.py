"""The web dashboard (fleet utilization and cost views)."""
