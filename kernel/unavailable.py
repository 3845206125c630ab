"""A server an API needs is away: what that looks like, and what the API answers.

While the event store (PostgreSQL, a locked SQLite file) or MongoDB cannot be reached,
an API answers ``503`` with ``Retry-After`` and a problem body, never a ``500``: the
request guard (``request_guard.py``) turns these errors into that answer wherever they
are raised (a route, a dependency, the Idempotency-Key middleware). The clients'
timeouts that bound how long a request waits for a server before it gets here are set
where the clients are made (``EVENT_STORE_TIMEOUT`` in ``kernel/store.py``,
``MONGODB_TIMEOUT`` in ``read_side/settings.py``).
"""

from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from psycopg import InterfaceError as PsycopgInterfaceError
from psycopg import OperationalError as PsycopgOperationalError
from pymongo.errors import ConnectionFailure, PyMongoError
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import InterfaceError as SQLInterfaceError
from sqlalchemy.exc import OperationalError as SQLOperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from kernel.problems import ProblemResponse, problem

RETRY_AFTER_SECONDS = 1

_EVENT_STORE_ERRORS: tuple[type[BaseException], ...] = (
    StoreOperationalError,  # eventsourcing's wrapping of a failed transaction
    StoreInterfaceError,
    SQLOperationalError,  # a read outside eventsourcing's transactions (kernel/store.py)
    SQLInterfaceError,
    DisconnectionError,
    PoolTimeout,  # no connection of the pool came free in time
    PsycopgOperationalError,
    PsycopgInterfaceError,
)


def unavailable_server(error: BaseException) -> str | None:
    """The server ``error`` says is away ("the event store", "MongoDB"), or None when
    it says something else (a bug, bad input: not a 503)."""
    if isinstance(error, _EVENT_STORE_ERRORS):
        return "the event store"
    # Unreachable, or an operation cut by the client's timeout (PyMongo's timeoutMS
    # marks every such error, ExecutionTimeout included, with ``timeout``).
    if isinstance(error, ConnectionFailure) or (isinstance(error, PyMongoError) and error.timeout):
        return "MongoDB"
    return None


def unavailable_problem(server: str) -> ProblemResponse:
    """The ``503`` answered while ``server`` is away."""
    return problem(
        503,
        detail=f"{server} is unavailable; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
