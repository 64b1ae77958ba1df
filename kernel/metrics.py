"""Prometheus metrics shared by every component, served on each process's METRICS_PORT.

With WORKERS > 1 each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR and its supervisor
serves their sum (kernel/workers.py).
"""

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPCS = Counter("coupons_rpcs_total", "RPCs handled, by method and status code", ["component", "method", "code"])
RPC_SECONDS = Histogram(
    "coupons_rpc_duration_seconds",
    "RPC latency",
    ["component", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LOCK_CONFLICTS = Counter(
    "coupons_lock_conflicts_total", "Calls refused with ABORTED because another operation held the code", ["method"]
)
REDEMPTIONS = Counter("coupons_redemptions_total", "Successful redemptions", ["book_id"])
PURGED_ROWS = Counter("coupons_purged_rows_total", "Rows deleted by the retention purge (kernel/purge.py)", ["table"])
# With WORKERS > 1 the count of whichever worker counted last (prometheus_client multiprocess mode).
AVAILABLE_CODES = Gauge(
    "coupons_available_codes", "AVAILABLE codes per book, as last counted", ["book_id"], multiprocess_mode="mostrecent"
)

# The events service (docs/events.md, docs/webhooks.md).
EVENTS_INGEST_LAG = Gauge(
    "coupons_events_ingest_lag_seconds",
    "Age of the newest event of a source when it was stored",
    ["source"],
    multiprocess_mode="mostrecent",
)
WEBHOOK_ATTEMPTS = Counter("coupons_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"])
WEBHOOK_BACKLOG = Gauge(
    "coupons_webhook_backlog", "Pending webhook deliveries of enabled endpoints", multiprocess_mode="mostrecent"
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "coupons_webhook_oldest_pending_seconds",
    "Age of the oldest pending webhook delivery of an enabled endpoint",
    multiprocess_mode="mostrecent",
)


# The labelled children of one (component, full method, code), looked up once: `.labels()` takes a lock
# and validates its values on every call. Bounded: only a server's own methods and the status codes.
_RpcChildren = tuple[Counter, Histogram, Counter | None]
_rpc_children: dict[tuple[str, str, str], _RpcChildren] = {}


def _children(component: str, method: str, code: str) -> _RpcChildren:
    short = method.rsplit("/", 1)[-1]
    conflicts = LOCK_CONFLICTS.labels(short) if code == "ABORTED" else None
    return RPCS.labels(component, short, code), RPC_SECONDS.labels(component, short), conflicts


def record_rpc(component: str, method: str, code: str, seconds: float) -> None:
    key = (component, method, code)
    children = _rpc_children.get(key)
    if children is None:
        children = _rpc_children[key] = _children(component, method, code)
    count, duration, conflicts = children
    count.inc()
    duration.observe(seconds)
    if conflicts is not None:
        conflicts.inc()


def serve(port: int, host: str) -> None:
    """Starts the /metrics endpoint on the component's HOST in a background thread; port 0 turns it off."""
    if port:
        start_http_server(port, addr=host)
