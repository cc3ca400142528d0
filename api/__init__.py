"""The REST API (FastAPI, /v1): thin routes over broker services."""
