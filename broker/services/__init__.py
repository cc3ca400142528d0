"""Use-cases shared by the CLI and the API: each takes a session and returns domain data (does I/O)."""
