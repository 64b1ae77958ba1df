"""The suite's components, listed once: every list of services (ports, migrations, processes, the gateway's
backends, the CLI's addresses, service credentials) is derived from this table."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    name: str
    port: int  # the default port; <NAME>_PORT overrides it, <NAME>_ADDR tells the others where it is
    grpc: bool = True  # a gRPC service with its own schema and migrations (the gateway is neither)
    calls_others: bool = False  # signs in to auth as itself (SERVICE_SECRET_<NAME>)
    event_source: bool = False  # records events in its outbox and serves coupons.events.v1.EventFeedService


# In the gateway's routing priority order; services before the gateway, which starts last.
COMPONENTS = (
    Component("auth", 50051),
    Component("books", 50052, calls_others=True, event_source=True),
    Component("redemption", 50053, calls_others=True, event_source=True),
    Component("pools", 50054, calls_others=True, event_source=True),
    Component("events", 50055, calls_others=True),
    Component("gateway", 8080, grpc=False),
)
DEFAULT_PORTS = {c.name: c.port for c in COMPONENTS}
SERVICES = tuple(c.name for c in COMPONENTS if c.grpc)
CALLING_SERVICES = tuple(c.name for c in COMPONENTS if c.calls_others)
EVENT_SOURCES = tuple(c.name for c in COMPONENTS if c.event_source)
