"""Nightly cost reports: numbers (pure), build and store, HTML/CSV rendering, delivery, the job."""
