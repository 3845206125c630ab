"""What the numbers were measured on: hardware, load, software versions, date."""

import os
import platform
import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import sqlalchemy

from devstack.servers import SECANTUS_REQUIREMENT

LIBRARIES = (
    "eventsourcing",
    "eventsourcing-sqlalchemy",
    "sqlalchemy",
    "psycopg",
    "aiokafka",
    "faust-streaming",
    "pymongo",
    "fastapi",
    "pydantic",
    "uvicorn",
    "httpx",
    "noida-db",
)


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int
    memory_gib: float
    os: str
    python: str
    libraries: dict[str, str]
    servers: dict[str, str]
    date: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def postgres_version(url: str) -> str:
    """The server's version, or why it could not be asked."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(sqlalchemy.text("SHOW server_version")).scalar())
    except sqlalchemy.exc.SQLAlchemyError as error:
        return f"unavailable ({type(error).__name__})"
    finally:
        engine.dispose()


def describe(postgres_url: str) -> Machine:
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gib=_memory_gib(),
        os=f"{platform.system()} {platform.release()}",
        python=sys.version.split()[0],
        libraries={name: _version(name) for name in LIBRARIES},
        servers={
            "Kafka protocol": f"noida-db {_version('noida-db')}",
            "MongoDB wire": SECANTUS_REQUIREMENT.replace("==", " "),
            "PostgreSQL": postgres_version(postgres_url),
            "SQLite": sqlite3.sqlite_version,
        },
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_before=os.getloadavg(),
    )
