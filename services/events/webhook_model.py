"""The webhooks' domain types, shared by their rules, their data access, the dispatcher and the servicer.

States and outcomes are stored by these values; the servicer maps them to the protobuf enums.
"""

import datetime as dt
import enum
from dataclasses import dataclass


class EndpointState(enum.StrEnum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


class DeliveryState(enum.StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    DEAD_LETTER = "DEAD_LETTER"


class AttemptOutcome(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    HTTP_ERROR = "HTTP_ERROR"
    TIMEOUT = "TIMEOUT"
    CONNECTION_FAILED = "CONNECTION_FAILED"
    TARGET_REFUSED = "TARGET_REFUSED"


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    event_types: tuple[str, ...]
    book_id: str
    description: str
    state: EndpointState
    secret: str
    created_at: dt.datetime
    updated_at: dt.datetime
    secret_rotated_at: dt.datetime


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: dt.datetime
    duration_ms: int
    outcome: AttemptOutcome
    status_code: int = 0
    error: str = ""


@dataclass(frozen=True)
class Delivery:
    id: str
    endpoint_id: str
    event: object  # the stored event's row (services/events/repository.py columns), made an Event by event_of
    state: DeliveryState
    attempt_count: int
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    last_status_code: int
    last_error: str
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class Claim:
    """A delivery a dispatcher holds for one attempt: where to send what, signed with which secret."""

    delivery_id: str
    endpoint_id: str
    url: str
    secret: str
    attempt_number: int
    round_tries: int  # tries in this round, this one included: the schedule and the dead letter count these
    event: object  # the event's row, as in Delivery


@dataclass(frozen=True)
class Outcome:
    """What one attempt of a claim came to, to be recorded: its attempt and the delivery's next state."""

    claim: Claim
    attempt: Attempt
    state: DeliveryState
    next_attempt_at: dt.datetime
    recorded_at: dt.datetime
