"""API routes: parse, call a service, serialize."""
