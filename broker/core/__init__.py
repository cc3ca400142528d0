"""The pure decision core: domain types, cost math inputs, placement and lifecycle (no I/O)."""
