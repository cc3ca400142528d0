"""Placeholder: filled in by the issue-5 work on commitments."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
