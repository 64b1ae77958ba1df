"""Settings from environment variables, with defaults that make a local run work out of the box."""

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from kernel.components import CALLING_SERVICES, DEFAULT_PORTS

ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _networks(raw: str) -> tuple[str, ...]:
    """WEBHOOK_ALLOWED_NETWORKS: CIDRs, "local" for LOOPBACK_NETWORKS, "none" for none."""
    names = [n.strip() for n in raw.split(",") if n.strip() and n.strip() != "none"]
    return tuple(cidr for n in names for cidr in (LOOPBACK_NETWORKS if n == "local" else (n,)))


def _int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


_SWITCH = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}


def switch(name: str, raw: str, default: bool) -> bool:
    """An on/off value (on, off, true, false, yes, no, 1, 0); empty means the default."""
    value = raw.strip().lower()
    if not value:
        return default
    if value not in _SWITCH:
        raise SystemExit(f"{name} must be on or off, got {raw!r}")
    return _SWITCH[value]


def _float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def cores() -> int:
    """The cores this process may run on: its CPU affinity (which a cpuset narrows), else the machine's.
    A container's CPU limit (a quota) is not visible here, so the manifests set WORKERS themselves."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


MAX_WORKERS = 64
# Where webhooks may go although not public, when ENVIRONMENT=local and WEBHOOK_ALLOWED_NETWORKS is unset:
# this machine, so `make run` delivers to the CLI's receiver. Production allows no such network by default.
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")

# The services that call others (kernel.components) sign in each as itself with its own secret (SERVICE_SECRET_<NAME>).
MIN_SERVICE_SECRET_LENGTH = 32
MAX_REFRESH_REUSE_GRACE_SECONDS = 60


def _local_secret(run_dir: str, name: str) -> str:
    """A local run's service secret: made once in RUN_DIR/keys, shared by every process of the suite."""
    path = Path(run_dir) / "keys" / f"service-{name}.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        draft.write_text(secrets.token_urlsafe(32))
        draft.chmod(0o600)
        try:
            os.link(draft, path)  # atomic: when two processes race, both read the winner's secret
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def _service_secrets(run_dir: str, production: bool) -> dict[str, str]:
    found = {name: os.environ.get(f"SERVICE_SECRET_{name.upper()}", "").strip() for name in CALLING_SERVICES}
    if production:
        return {name: value for name, value in found.items() if value}
    return {name: value or _local_secret(run_dir, name) for name, value in found.items()}


def _address(component: str) -> str:
    return _env(f"{component.upper()}_ADDR", f"127.0.0.1:{DEFAULT_PORTS[component]}")


@dataclass(frozen=True)
class Settings:
    """Configuration of one component; every field has the environment variable named in its comment."""

    component: str
    environment: str  # ENVIRONMENT: "local" (default) or "production"
    host: str  # HOST
    port: int  # <COMPONENT>_PORT, e.g. AUTH_PORT
    metrics_port: int  # METRICS_PORT: Prometheus /metrics; the component's port + 1000 by default, 0 = off
    database_url: str  # DATABASE_URL; empty locally means the embedded PostgreSQL
    db_pool_size: int  # DB_POOL_SIZE
    db_max_overflow: int  # DB_MAX_OVERFLOW
    db_pool_timeout_seconds: int  # DB_POOL_TIMEOUT_SECONDS
    # DB_PREPARED_STATEMENTS: on (default) lets psycopg prepare a statement server-side after 5 runs on a
    # connection; off (prepare_threshold None) for a transaction-mode pooler that cannot carry them
    # (PgBouncer before 1.21, or max_prepared_statements = 0).
    db_prepared_statements: bool
    auth_addr: str  # AUTH_ADDR
    books_addr: str  # BOOKS_ADDR
    redemption_addr: str  # REDEMPTION_ADDR
    pools_addr: str  # POOLS_ADDR
    events_addr: str  # EVENTS_ADDR
    jwt_issuer: str  # JWT_ISSUER
    jwt_audience: str  # JWT_AUDIENCE
    jwt_private_key_file: str  # JWT_PRIVATE_KEY_FILE (auth only); generated locally when missing
    access_token_ttl_seconds: int  # ACCESS_TOKEN_TTL_SECONDS
    refresh_token_ttl_seconds: int  # REFRESH_TOKEN_TTL_SECONDS
    bcrypt_rounds: int  # BCRYPT_ROUNDS
    login_max_failures: int  # LOGIN_MAX_FAILURES: failures per email before a pause
    login_lockout_seconds: int  # LOGIN_LOCKOUT_SECONDS
    login_max_failures_per_client: int  # LOGIN_MAX_FAILURES_PER_CLIENT: failures per client address before a pause
    shutdown_grace_seconds: int  # SHUTDOWN_GRACE_SECONDS
    log_level: str  # LOG_LEVEL
    run_dir: str  # RUN_DIR: local state (keys, embedded database)
    # SERVICE_SECRET_BOOKS, _REDEMPTION, _POOLS, _EVENTS: each service's credential for auth's client-credentials
    # exchange; a service reads its own, auth all of them. Generated under RUN_DIR/keys locally.
    service_secrets: dict[str, str] = field(default_factory=dict)
    service_token_ttl_seconds: int = 300  # SERVICE_TOKEN_TTL_SECONDS
    revocation_poll_seconds: float = 2.0  # REVOCATION_POLL_SECONDS: how soon a deactivation reaches every service
    # REFRESH_REUSE_GRACE_SECONDS: a spent refresh token presented again this soon after its use (a double
    # submit, two tabs) gets a session of the same family instead of revoking it; 0 turns the grace off.
    refresh_reuse_grace_seconds: int = 10
    # The retention purge in every service (kernel/purge.py): idempotency keys past their day, spent refresh tokens.
    purge_interval_seconds: float = 300.0  # PURGE_INTERVAL_SECONDS: one pass this often (jittered); 0 turns it off
    purge_batch_size: int = 1000  # PURGE_BATCH_SIZE: rows per delete, each its own short transaction
    purge_pause_seconds: float = 0.2  # PURGE_PAUSE_SECONDS: pause between two batches of a pass
    # REFRESH_TOKEN_RETENTION_SECONDS: revoked and expired refresh tokens are kept this long after their
    # revocation or expiry, then purged; spent (used) ones are kept until they expire, for reuse detection.
    refresh_token_retention_seconds: int = 86400
    # WORKERS: processes serving a gRPC service's port (SO_REUSEPORT) under a supervisor (kernel/workers.py);
    # 1 is one process and no supervisor. Default: the cores this process may use.
    workers: int = 1
    # EVENTS_POLL_SECONDS: how often the events service reads an idle source's feed, and a watch looks
    # for new events; a busy feed is read again at once.
    events_poll_seconds: float = 0.2
    # OUTBOX_RETENTION_SECONDS: how long books and pools keep an outbox row (the events service has read it
    # within a second); EVENTS_RETENTION_SECONDS: how long the events service keeps an event for watches.
    outbox_retention_seconds: int = 7 * 86400
    events_retention_seconds: int = 30 * 86400
    # Webhooks (docs/webhooks.md). WEBHOOK_TIMEOUT_SECONDS: one attempt's limit; WEBHOOK_MAX_ATTEMPTS: tries
    # before the dead letter; the n-th retry waits WEBHOOK_FIRST_RETRY_SECONDS * 2^(n-1), at most
    # WEBHOOK_MAX_RETRY_SECONDS, +-20% jitter; WEBHOOK_LEASE_SECONDS: how long a claimed delivery is a
    # dispatcher's (above the timeout: a crashed dispatcher's claim runs out after it); WEBHOOK_CONCURRENCY:
    # attempts in flight per dispatcher (0: this replica runs none); WEBHOOK_ALLOWED_NETWORKS: comma-separated
    # CIDRs an endpoint may point into although they are not public (loopback, private, link-local), "local"
    # for loopback (the default when ENVIRONMENT=local), "none" (the default in production);
    # WEBHOOK_RETENTION_SECONDS: how long a finished (delivered or dead-lettered) delivery and its attempts stay.
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 12
    webhook_first_retry_seconds: float = 60.0
    webhook_max_retry_seconds: float = 8 * 3600.0
    webhook_lease_seconds: float = 60.0
    webhook_concurrency: int = 16
    webhook_allowed_networks: tuple[str, ...] = ()
    webhook_retention_seconds: int = 7 * 86400

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def listen_address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, component: str) -> "Settings":
        run_dir = _env("RUN_DIR", str(ROOT / ".run"))
        environment = _env("ENVIRONMENT", "local")
        webhook_networks = _env("WEBHOOK_ALLOWED_NETWORKS", "" if environment == "production" else "local")
        settings = cls(
            component=component,
            environment=environment,
            host=_env("HOST", "127.0.0.1"),
            port=_int(f"{component.upper()}_PORT", DEFAULT_PORTS[component]),
            metrics_port=_int("METRICS_PORT", DEFAULT_PORTS[component] + 1000),
            database_url=os.environ.get("DATABASE_URL", "").strip(),
            db_pool_size=_int("DB_POOL_SIZE", 10),
            db_max_overflow=_int("DB_MAX_OVERFLOW", 10),
            db_pool_timeout_seconds=_int("DB_POOL_TIMEOUT_SECONDS", 5),
            db_prepared_statements=switch(
                "DB_PREPARED_STATEMENTS", os.environ.get("DB_PREPARED_STATEMENTS", ""), default=True
            ),
            auth_addr=_address("auth"),
            books_addr=_address("books"),
            redemption_addr=_address("redemption"),
            pools_addr=_address("pools"),
            events_addr=_address("events"),
            jwt_issuer=_env("JWT_ISSUER", "coupons-auth"),
            jwt_audience=_env("JWT_AUDIENCE", "coupons"),
            jwt_private_key_file=_env("JWT_PRIVATE_KEY_FILE", str(Path(run_dir) / "keys" / "jwt-ed25519.pem")),
            access_token_ttl_seconds=_int("ACCESS_TOKEN_TTL_SECONDS", 900),
            refresh_token_ttl_seconds=_int("REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600),
            bcrypt_rounds=_int("BCRYPT_ROUNDS", 12),
            login_max_failures=_int("LOGIN_MAX_FAILURES", 5),
            login_lockout_seconds=_int("LOGIN_LOCKOUT_SECONDS", 300),
            login_max_failures_per_client=_int("LOGIN_MAX_FAILURES_PER_CLIENT", 50),
            shutdown_grace_seconds=_int("SHUTDOWN_GRACE_SECONDS", 10),
            log_level=_env("LOG_LEVEL", "INFO"),
            run_dir=run_dir,
            service_secrets=_service_secrets(run_dir, _env("ENVIRONMENT", "local") == "production"),
            service_token_ttl_seconds=_int("SERVICE_TOKEN_TTL_SECONDS", 300),
            revocation_poll_seconds=_int("REVOCATION_POLL_SECONDS", 2),
            refresh_reuse_grace_seconds=_int("REFRESH_REUSE_GRACE_SECONDS", 10),
            purge_interval_seconds=_float("PURGE_INTERVAL_SECONDS", 300),
            purge_batch_size=_int("PURGE_BATCH_SIZE", 1000),
            purge_pause_seconds=_float("PURGE_PAUSE_SECONDS", 0.2),
            refresh_token_retention_seconds=_int("REFRESH_TOKEN_RETENTION_SECONDS", 86400),
            workers=_int("WORKERS", cores()),
            events_poll_seconds=_float("EVENTS_POLL_SECONDS", 0.2),
            outbox_retention_seconds=_int("OUTBOX_RETENTION_SECONDS", 7 * 86400),
            events_retention_seconds=_int("EVENTS_RETENTION_SECONDS", 30 * 86400),
            webhook_timeout_seconds=_float("WEBHOOK_TIMEOUT_SECONDS", 10),
            webhook_max_attempts=_int("WEBHOOK_MAX_ATTEMPTS", 12),
            webhook_first_retry_seconds=_float("WEBHOOK_FIRST_RETRY_SECONDS", 60),
            webhook_max_retry_seconds=_float("WEBHOOK_MAX_RETRY_SECONDS", 8 * 3600),
            webhook_lease_seconds=_float("WEBHOOK_LEASE_SECONDS", 60),
            webhook_concurrency=_int("WEBHOOK_CONCURRENCY", 16),
            webhook_allowed_networks=_networks(webhook_networks),
            webhook_retention_seconds=_int("WEBHOOK_RETENTION_SECONDS", 7 * 86400),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuses demo-only defaults in production."""
        if self.environment not in ("local", "production"):
            raise SystemExit(f"ENVIRONMENT must be 'local' or 'production', got {self.environment!r}")
        if not 0 <= self.refresh_reuse_grace_seconds <= MAX_REFRESH_REUSE_GRACE_SECONDS:
            # Longer would let a stolen copy of a spent token through unnoticed for longer.
            raise SystemExit(
                f"REFRESH_REUSE_GRACE_SECONDS must be between 0 and {MAX_REFRESH_REUSE_GRACE_SECONDS}, "
                f"got {self.refresh_reuse_grace_seconds}"
            )
        if self.purge_interval_seconds < 0 or self.purge_batch_size < 1 or self.purge_pause_seconds < 0:
            raise SystemExit("PURGE_INTERVAL_SECONDS and PURGE_PAUSE_SECONDS must be >= 0, PURGE_BATCH_SIZE >= 1")
        if self.refresh_token_retention_seconds < 0:
            raise SystemExit("REFRESH_TOKEN_RETENTION_SECONDS must be >= 0")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise SystemExit(f"WORKERS must be between 1 and {MAX_WORKERS}, got {self.workers}")
        if not 0 < self.webhook_timeout_seconds < self.webhook_lease_seconds:
            # An attempt outliving its lease could be made a second time by another dispatcher meanwhile.
            raise SystemExit("WEBHOOK_TIMEOUT_SECONDS must be above 0 and below WEBHOOK_LEASE_SECONDS")
        if self.webhook_max_attempts < 1 or self.webhook_concurrency < 0:
            raise SystemExit("WEBHOOK_MAX_ATTEMPTS must be >= 1, WEBHOOK_CONCURRENCY >= 0 (0: no dispatcher)")
        if not self.production:
            return
        if not self.database_url and self.component != "gateway":  # the gateway has no database
            raise SystemExit("DATABASE_URL is required when ENVIRONMENT=production")
        if self.bcrypt_rounds < 12:
            raise SystemExit("BCRYPT_ROUNDS below 12 is refused when ENVIRONMENT=production")

    def service_secret(self, name: str) -> str:
        """A service's secret; refused when missing or short in production (checked when serving, so a
        migration Job needs none)."""
        secret = self.service_secrets.get(name, "")
        if self.production and len(secret) < MIN_SERVICE_SECRET_LENGTH:
            raise SystemExit(
                f"SERVICE_SECRET_{name.upper()} of at least {MIN_SERVICE_SECRET_LENGTH} characters "
                "is required when ENVIRONMENT=production"
            )
        return secret
