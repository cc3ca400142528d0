"""FastAPI dependencies: the database session (the one transaction boundary) and the clock.

The ones that do no I/O are ``async def``: FastAPI runs a sync dependency in a thread pool, and
that hop costs more than the dependency itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from broker.db.engine import Database


async def get_database(request: Request) -> Database:
    return request.app.state.database  # type: ignore[no-any-return]


def get_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back when it raises."""
    with database.sessions.begin() as session:
        yield session


async def get_now(request: Request) -> datetime:
    return request.app.state.clock()  # type: ignore[no-any-return]


DatabaseDep = Annotated[Database, Depends(get_database)]
# scope="function": the transaction commits before the response is sent (FastAPI's default, "request",
# commits after it, so a client could see 201 for a write that then failed to commit).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
NowDep = Annotated[datetime, Depends(get_now)]
