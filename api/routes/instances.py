"""Placeholder: filled in by the issue-5 work on instances."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
