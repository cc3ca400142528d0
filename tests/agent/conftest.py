"""Fixtures of the node agent's tests (no I/O)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _agent_log_level() -> Iterator[None]:
    """The command sets its logger's level; put it back so tests do not leak it into each other."""
    logger = logging.getLogger("broker.agent")
    level = logger.level
    yield
    logger.setLevel(level)
