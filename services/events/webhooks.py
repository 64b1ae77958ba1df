"""The webhook rules: what an endpoint may be, how secrets are made and rotated, the retry schedule, and
what an admin may do with deliveries."""

import random
from dataclasses import dataclass

from kernel import paging
from kernel.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from kernel.validation import is_uuid
from kernel.webhook_signature import new_secret
from services.events.watch import check_event_types
from services.events.webhook_model import Delivery, DeliveryState, Endpoint, EndpointState
from services.events.webhook_repository import WebhookRepository
from services.events.webhook_targets import check_target

UPDATABLE_FIELDS = ("url", "event_types", "book_id", "description", "state")
MAX_DESCRIPTION = 500
MAX_DELIVERY_PAGE = 100
JITTER = 0.2  # each wait is the schedule's +-20%, so endpoints failing together do not retry in step


@dataclass(frozen=True)
class Schedule:
    """The n-th retry (after the n-th failed try of a round) waits first * 2^(n-1), at most `longest`, jittered;
    after `tries` failed tries the delivery is dead-lettered."""

    tries: int
    first_seconds: float
    longest_seconds: float

    def wait_after(self, failed_tries: int, rand: random.Random) -> float | None:
        """Seconds until the next try after this many failures in the round; None: dead letter."""
        if failed_tries >= self.tries:
            return None
        nominal = min(self.first_seconds * 2 ** (failed_tries - 1), self.longest_seconds)
        return nominal * rand.uniform(1 - JITTER, 1 + JITTER)

    def nominal_waits(self) -> list[float]:
        return [min(self.first_seconds * 2 ** (n - 1), self.longest_seconds) for n in range(1, self.tries)]


@dataclass(frozen=True)
class EndpointFields:
    url: str
    event_types: tuple[str, ...]
    book_id: str
    description: str
    state: EndpointState | None  # None: unchanged (an update) or ENABLED (a creation)


def _check_fields(fields: EndpointFields, names: tuple[str, ...]) -> None:
    if "event_types" in names:
        check_event_types(list(fields.event_types), "endpoint.event_types")
    violations: list[FieldViolation] = []
    if "book_id" in names and fields.book_id and not is_uuid(fields.book_id):
        violations.append(FieldViolation("endpoint.book_id", "must be a UUID, or empty for every book"))
    if "description" in names and len(fields.description) > MAX_DESCRIPTION:
        violations.append(FieldViolation("endpoint.description", f"must be at most {MAX_DESCRIPTION} characters"))
    if violations:
        raise InvalidArgument(violations)


class WebhooksDomain:
    def __init__(self, repository: WebhookRepository, allow_plain_http: bool, allowed_networks: tuple):
        self.repo = repository
        self.allow_plain_http = allow_plain_http
        self.allowed_networks = allowed_networks

    async def _endpoint(self, conn, endpoint_id: str, field: str = "id") -> Endpoint:
        if not is_uuid(endpoint_id):
            raise InvalidArgument.field(field, "must be a webhook endpoint's id (a UUID)", reason="INVALID_ID")
        endpoint = await self.repo.endpoint(conn, endpoint_id)
        if endpoint is None:
            raise NotFound("webhook endpoint", endpoint_id)
        return endpoint

    async def _once(self, conn, scope: str, request_id: str, parts: tuple, run, load=None):
        """run() once per request_id; a retry gets the result (an endpoint unless `load` says otherwise) as it
        is now, an endpoint's secret included."""
        load = load or self._endpoint

        async def replay(stored: bytes):
            return await load(conn, stored.decode())

        return await self.repo.idempotency.once(
            conn, scope, request_id, parts, run, lambda result: result.id.encode(), replay
        )

    async def create(self, fields: EndpointFields, request_id: str) -> Endpoint:
        _check_fields(fields, UPDATABLE_FIELDS)
        if fields.state is EndpointState.DISABLED:
            raise InvalidArgument.field("endpoint.state", "must be ENABLED or unspecified when registering")
        await check_target(fields.url, self.allow_plain_http, self.allowed_networks)
        async with self.repo.transaction() as conn:

            async def create() -> Endpoint:
                return await self.repo.insert_endpoint(
                    conn, fields.url, list(fields.event_types), fields.book_id, fields.description, new_secret()
                )

            parts = (fields.url, sorted(fields.event_types), fields.book_id, fields.description)
            return await self._once(conn, "CreateWebhookEndpoint", request_id, parts, create)

    async def get(self, endpoint_id: str) -> Endpoint:
        async with self.repo.transaction() as conn:
            return await self._endpoint(conn, endpoint_id)

    async def list_endpoints(self, page_size: int, page_token: str) -> tuple[list[Endpoint], str, int]:
        size = paging.page_size(page_size)
        after = paging.decode_time_id(page_token)
        async with self.repo.transaction() as conn:
            rows, total = await self.repo.list_endpoints(conn, size + 1, after)
        page, token = paging.next_page_by_creation(rows, size)
        return page, token, total

    async def update(self, endpoint_id: str, fields: EndpointFields, mask: list[str], request_id: str) -> Endpoint:
        names = tuple(mask or UPDATABLE_FIELDS)
        unknown = [name for name in names if name not in UPDATABLE_FIELDS]
        if unknown:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "update_mask", f"{n} cannot be updated; the updatable fields are {', '.join(UPDATABLE_FIELDS)}"
                    )
                    for n in unknown
                ]
            )
        if not is_uuid(endpoint_id):
            raise InvalidArgument.field("endpoint.id", "must be a webhook endpoint's id (a UUID)", reason="INVALID_ID")
        _check_fields(fields, names)
        if "url" in names:
            await check_target(fields.url, self.allow_plain_http, self.allowed_networks)
        changes = {
            "url": fields.url,
            "event_types": list(fields.event_types),
            "book_id": fields.book_id,
            "description": fields.description,
            "state": fields.state.value if fields.state else None,
        }
        changes = {name: changes[name] for name in names if changes[name] is not None}
        async with self.repo.transaction() as conn:

            async def update() -> Endpoint:
                endpoint = await self.repo.update_endpoint(conn, endpoint_id, changes)
                if endpoint is None:
                    raise NotFound("webhook endpoint", endpoint_id)
                return endpoint

            parts = (endpoint_id, sorted((k, str(v)) for k, v in changes.items()))
            return await self._once(conn, "UpdateWebhookEndpoint", request_id, parts, update)

    async def rotate_secret(self, endpoint_id: str, request_id: str) -> Endpoint:
        async with self.repo.transaction() as conn:
            await self._endpoint(conn, endpoint_id)

            async def rotate() -> Endpoint:
                endpoint = await self.repo.update_endpoint(conn, endpoint_id, {"secret": new_secret()})
                assert endpoint is not None  # just read in this transaction; deletion does not exist
                return endpoint

            return await self._once(conn, "RotateWebhookSecret", request_id, (endpoint_id,), rotate)

    async def deliveries(
        self, endpoint_id: str, state: DeliveryState | None, page_size: int, page_token: str
    ) -> tuple[list[Delivery], str, int]:
        size = min(paging.page_size(page_size), MAX_DELIVERY_PAGE)
        after = paging.decode_time_id(page_token)
        async with self.repo.transaction() as conn:
            if endpoint_id != "-":
                await self._endpoint(conn, endpoint_id, "endpoint_id")
            rows, total = await self.repo.list_deliveries(
                conn, "" if endpoint_id == "-" else endpoint_id, state, size + 1, after
            )
        page, token = paging.next_page_by_creation(rows, size)
        return page, token, total

    async def _delivery(self, conn, delivery_id: str) -> Delivery:
        if not is_uuid(delivery_id):
            raise InvalidArgument.field("id", "must be a webhook delivery's id (a UUID)", reason="INVALID_ID")
        delivery = await self.repo.delivery(conn, delivery_id)
        if delivery is None:
            raise NotFound("webhook delivery", delivery_id)
        return delivery

    async def delivery(self, delivery_id: str) -> Delivery:
        async with self.repo.transaction() as conn:
            return await self._delivery(conn, delivery_id)

    async def redeliver(self, delivery_id: str, request_id: str) -> Delivery:
        async with self.repo.transaction() as conn:
            await self._delivery(conn, delivery_id)

            async def redeliver() -> Delivery:
                if not await self.repo.redeliver(conn, delivery_id):
                    raise FailedPrecondition(
                        "This delivery is still pending: it will be tried again on its schedule.",
                        reason="DELIVERY_PENDING",
                    )
                return await self._delivery(conn, delivery_id)

            return await self._once(conn, "RedeliverWebhook", request_id, (delivery_id,), redeliver, self._delivery)
