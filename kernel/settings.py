"""Configuration from the environment; the same names in docker-compose and the local runner."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_partitions: int = 4
    kafka_empty_fetch_interval: float = 0.0
    """Seconds a consumer waits after a fetch that brought nothing, from when it was sent,
    on a broker that answers at once (docs/adr/0019). 0, the default, leaves aiokafka as it
    is: Kafka itself holds such a fetch. The local stack (`cqrs run`, the tests) sets 0.01
    for its broker."""
    kafka_fetch_wakeup_dir: str = ""
    """A folder where producers of this machine announce new messages to consumers
    (inotify; `cqrs run` sets `var/kafka-wakeups`); empty: no wakeups (docs/adr/0022)."""
    kafka_empty_fetch_interval_with_wakeups: float = 1.0
    """Instead of `kafka_empty_fetch_interval` while a consumer hears the wakeups: only
    the fallback for producers that do not announce."""
    worker_instance: int = Field(default=0, ge=0)
    """The slot of this copy of a worker among the copies of it that run (0 to N-1, set by
    whatever starts N copies): its consumer group instance id is `<group>-<slot>` (static
    membership, docs/adr/0031). Stable across restarts, unique among running copies: two
    live copies with one slot take each other's partitions in turn."""
    kafka_session_timeout: float = Field(default=30.0, ge=6.0, le=90.0)
    """Seconds Kafka waits for a silent group member before it gives its partitions to the
    others. A worker restarted within it gets its partitions back without a rebalance;
    one that never comes back leaves them idle that long. (The local broker keeps a static
    member's partitions until it comes back, however long.)"""


class RelaySettings(KafkaSettings):
    relay_batch_size: int = 500
    relay_batches_in_flight: int = Field(default=2, ge=1)
    """Batches sent and not yet acknowledged at most: the next one is read and mapped, and
    sent, while these are acknowledged (and their position recorded)."""
    relay_record_interval: float = 0.05
    """Seconds between two records of the relay's position at least (what is acknowledged
    meanwhile is recorded by the next): fewer writes to the store, and a relay killed
    sends again what was acknowledged since its last record."""
    relay_poll_interval: float = 0.05
    """Seconds between looks at the log when nothing announces the store's commits."""
    relay_watched_poll_interval: float = 2.0
    """The same while the store's commits are announced (LISTEN, the SQLite files'
    watch): only the fallback should an announcement be lost (docs/adr/0022)."""
    relay_ack_warning_after: float = 10.0
    """Seconds the relay waits for acks with RELAY_BATCHES_IN_FLIGHT batches unacknowledged
    before it logs a warning (once per wait): the broker is away or slow."""
    relay_wake_on_commit: bool = True
    """Wake on the store's commits (LISTEN on PostgreSQL, PRAGMA data_version on
    SQLite) sooner than the next poll; the poll stays (docs/adr/0021)."""
    relay_listen_retry_interval: float = 1.0
    """PostgreSQL: seconds between attempts to reconnect a lost listening connection."""
    relay_sqlite_check_interval: float = 0.005
    """SQLite without inotify (not Linux): seconds between checks of PRAGMA data_version;
    0 turns the SQLite watch off. With inotify, it is checked when the files are written."""
    relay_leader_election: bool = True
    """Several relays of a service may run: one leads and publishes, the others wait
    (docs/adr/0029). False: the relay publishes at once, with nothing to guard against
    a second one."""
    relay_lease_seconds: float = Field(default=3.0, gt=0)
    """How long a leader stays the leader without confirming it (it confirms every third
    of it): a standby takes over at most this long after the leader stopped (SQLite's
    lease row; PostgreSQL's `idle_session_timeout` of the lock's session). A killed
    leader's PostgreSQL lock goes at once."""
    relay_standby_check_interval: float = Field(default=0.5, gt=0)
    """Seconds between a standby's attempts to take the leadership."""


class AuthSettings(BaseSettings):
    """How every API verifies bearer tokens (docs/auth.md); environment `AUTH_*`.

    The defaults fit `cqrs run`: tokens minted by `cqrs token` with the key pair under
    `var/auth/`. For another OIDC provider set the issuer, the audience, its JWKS URL
    and where its tokens carry the roles and the business id.
    """

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    issuer: str = "cqrs-local"
    audience: str = "cqrs-api"
    jwks_url: str = Field(default_factory=lambda: Path("var/auth/jwks.json").resolve().as_uri())
    """Where the issuer's public keys are: `https://...` or `file://...`."""
    roles_claim: str = "realm_access.roles"
    """Dotted path of the claim holding the list of roles (Keycloak's realm roles)."""
    subject_claim: str = "sub"
    """The claim holding the business id the caller acts as (customer or restaurant id)."""
    leeway_seconds: float = Field(default=10.0, ge=0, le=300)
    """Clock skew allowed on exp, nbf and iat."""
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    """Keys older than this are fetched again (rotation)."""
    jwks_min_refetch_seconds: float = Field(default=10.0, ge=0)
    """A token with an unknown key id fetches the keys again at most this often."""
