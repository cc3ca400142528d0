"""A clock for the agent's loops: time moves only when the code under test sleeps (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta


class FakeClock:
    """Time that moves only when the agent sleeps; records each sleep."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
