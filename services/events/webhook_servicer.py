"""WebhookService over gRPC: protobuf in, domain call, protobuf out. Every method needs the ADMIN role."""

from coupons.events.v1 import webhooks_pb2 as pb
from coupons.events.v1 import webhooks_pb2_grpc
from kernel.timestamps import to_timestamp
from kernel.validation import enum_name
from services.events.watch import stored_event
from services.events.webhook_model import Attempt, AttemptOutcome, Delivery, DeliveryState, Endpoint, EndpointState
from services.events.webhooks import EndpointFields, WebhooksDomain

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WebhookService"].full_name
_ENDPOINT_STATES = {
    EndpointState.ENABLED: pb.WEBHOOK_ENDPOINT_STATE_ENABLED,
    EndpointState.DISABLED: pb.WEBHOOK_ENDPOINT_STATE_DISABLED,
}
_DELIVERY_STATES = {
    DeliveryState.PENDING: pb.WEBHOOK_DELIVERY_STATE_PENDING,
    DeliveryState.DELIVERED: pb.WEBHOOK_DELIVERY_STATE_DELIVERED,
    DeliveryState.DEAD_LETTER: pb.WEBHOOK_DELIVERY_STATE_DEAD_LETTER,
}
_OUTCOMES = {
    AttemptOutcome.SUCCEEDED: pb.WEBHOOK_ATTEMPT_OUTCOME_SUCCEEDED,
    AttemptOutcome.HTTP_ERROR: pb.WEBHOOK_ATTEMPT_OUTCOME_HTTP_ERROR,
    AttemptOutcome.TIMEOUT: pb.WEBHOOK_ATTEMPT_OUTCOME_TIMEOUT,
    AttemptOutcome.CONNECTION_FAILED: pb.WEBHOOK_ATTEMPT_OUTCOME_CONNECTION_FAILED,
    AttemptOutcome.TARGET_REFUSED: pb.WEBHOOK_ATTEMPT_OUTCOME_TARGET_REFUSED,
}


def _endpoint(endpoint: Endpoint, show_secret: bool = False) -> pb.WebhookEndpoint:
    return pb.WebhookEndpoint(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        book_id=endpoint.book_id,
        description=endpoint.description,
        state=_ENDPOINT_STATES[endpoint.state],
        secret=endpoint.secret if show_secret else "",
        secret_hint=endpoint.secret[-4:],
        create_time=to_timestamp(endpoint.created_at),
        update_time=to_timestamp(endpoint.updated_at),
        secret_rotate_time=to_timestamp(endpoint.secret_rotated_at),
    )


def _attempt(attempt: Attempt) -> pb.WebhookAttempt:
    return pb.WebhookAttempt(
        number=attempt.number,
        start_time=to_timestamp(attempt.started_at),
        duration_ms=attempt.duration_ms,
        outcome=_OUTCOMES[attempt.outcome],
        status_code=attempt.status_code,
        error=attempt.error,
    )


def _delivery(delivery: Delivery) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        event=stored_event(delivery.event),
        state=_DELIVERY_STATES[delivery.state],
        attempt_count=delivery.attempt_count,
        next_attempt_time=to_timestamp(delivery.next_attempt_at if delivery.state is DeliveryState.PENDING else None),
        create_time=to_timestamp(delivery.created_at),
        delivered_time=to_timestamp(delivery.delivered_at),
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        attempts=[_attempt(a) for a in delivery.attempts],
    )


def _fields(endpoint: pb.WebhookEndpoint) -> EndpointFields:
    state = None
    if endpoint.state != pb.WEBHOOK_ENDPOINT_STATE_UNSPECIFIED:
        name = enum_name(pb.WebhookEndpointState, endpoint.state, "endpoint.state")
        state = EndpointState(name.removeprefix("WEBHOOK_ENDPOINT_STATE_"))
    return EndpointFields(endpoint.url, tuple(endpoint.event_types), endpoint.book_id, endpoint.description, state)


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, domain: WebhooksDomain):
        self.domain = domain

    async def CreateWebhookEndpoint(self, request, context):
        endpoint = await self.domain.create(_fields(request.endpoint), request.request_id)
        return _endpoint(endpoint, show_secret=True)

    async def GetWebhookEndpoint(self, request, context):
        return _endpoint(await self.domain.get(request.id))

    async def ListWebhookEndpoints(self, request, context):
        endpoints, token, total = await self.domain.list_endpoints(request.page_size, request.page_token)
        return pb.ListWebhookEndpointsResponse(
            endpoints=[_endpoint(e) for e in endpoints], next_page_token=token, total_size=total
        )

    async def UpdateWebhookEndpoint(self, request, context):
        endpoint = await self.domain.update(
            request.endpoint.id, _fields(request.endpoint), list(request.update_mask.paths), request.request_id
        )
        return _endpoint(endpoint)

    async def RotateWebhookSecret(self, request, context):
        return _endpoint(await self.domain.rotate_secret(request.id, request.request_id), show_secret=True)

    async def ListWebhookDeliveries(self, request, context):
        state = None
        if request.state != pb.WEBHOOK_DELIVERY_STATE_UNSPECIFIED:
            name = enum_name(pb.WebhookDeliveryState, request.state, "state")
            state = DeliveryState(name.removeprefix("WEBHOOK_DELIVERY_STATE_"))
        deliveries, token, total = await self.domain.deliveries(
            request.endpoint_id, state, request.page_size, request.page_token
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[_delivery(d) for d in deliveries], next_page_token=token, total_size=total
        )

    async def GetWebhookDelivery(self, request, context):
        return _delivery(await self.domain.delivery(request.id))

    async def RedeliverWebhook(self, request, context):
        return _delivery(await self.domain.redeliver(request.id, request.request_id))
