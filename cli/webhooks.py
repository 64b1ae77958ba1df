"""`webhooks ...`: register, list, change and rotate endpoints, follow deliveries, redeliver a dead letter,
and `listen`: a small receiver that checks each delivery's signature and prints the verified events."""

import argparse
import asyncio
import json
import sys

from aiohttp import web
from google.protobuf import field_mask_pb2

from cli.commands import show
from cli.output import write_csv
from coupons.events.v1 import webhooks_pb2 as pb
from kernel import webhook_signature

STATES = {"pending": "PENDING", "delivered": "DELIVERED", "dead-letter": "DEAD_LETTER"}


def add_parser(sub) -> None:
    webhooks = sub.add_parser("webhooks", help="admin: webhook endpoints and their deliveries")
    actions = webhooks.add_subparsers(dest="action", required=True)
    p = actions.add_parser("create", help="register an endpoint; prints its secret (shown this once)")
    p.add_argument("url")
    _endpoint_options(p)
    p.set_defaults(run=create)
    p = actions.add_parser("list")
    p.set_defaults(run=list_endpoints)
    p = actions.add_parser("update", help="change what is named; the rest stays")
    p.add_argument("endpoint_id")
    p.add_argument("--url")
    _endpoint_options(p)
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true")
    state.add_argument("--disable", action="store_true", help="deliveries wait (pending) until enabled again")
    p.set_defaults(run=update)
    p = actions.add_parser("rotate", help="a new secret; the old one stops signing at once")
    p.add_argument("endpoint_id")
    p.set_defaults(run=rotate)
    p = actions.add_parser("deliveries", help="newest first, as CSV")
    p.add_argument("--endpoint", default="-", help="one endpoint's (default: every endpoint's)")
    p.add_argument("--state", choices=sorted(STATES))
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=deliveries)
    p = actions.add_parser("delivery", help="one delivery with its attempts")
    p.add_argument("delivery_id")
    p.set_defaults(run=delivery)
    p = actions.add_parser("redeliver", help="try a delivered or dead-lettered delivery again, now")
    p.add_argument("delivery_id")
    p.set_defaults(run=redeliver)
    p = actions.add_parser(
        "listen", help="receive deliveries on this machine and print each verified event as a JSON line"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--path", default="/webhooks")
    secret = p.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret", help="the endpoint's whsec_ secret")
    secret.add_argument(
        "--register", action="store_true", help="register an endpoint for this receiver and use its secret"
    )
    _endpoint_options(p)
    p.set_defaults(run=listen)


def _endpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", action="append", default=None, help="only this event type (repeatable); default all")
    p.add_argument("--book", default=None, help="only this book's events")
    p.add_argument("--description", default=None)


async def _create(args, client, url: str) -> pb.WebhookEndpoint:
    endpoint = pb.WebhookEndpoint(
        url=url, event_types=args.type or [], book_id=args.book or "", description=args.description or ""
    )
    return await client.webhooks.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(endpoint=endpoint), metadata=client.metadata
    )


async def create(args, client) -> None:
    show(await _create(args, client, args.url))


async def list_endpoints(args, client) -> None:
    rows, token = [], ""
    while True:
        page = await client.webhooks.ListWebhookEndpoints(
            pb.ListWebhookEndpointsRequest(page_size=200, page_token=token), metadata=client.metadata
        )
        rows += [
            [e.id, e.url, pb.WebhookEndpointState.Name(e.state), " ".join(e.event_types), e.book_id, e.secret_hint]
            for e in page.endpoints
        ]
        token = page.next_page_token
        if not token:
            break
    write_csv(None, ["id", "url", "state", "event_types", "book_id", "secret_ends_with"], rows)


async def update(args, client) -> None:
    endpoint, paths = pb.WebhookEndpoint(id=args.endpoint_id), []
    for name, value in (("url", args.url), ("book_id", args.book), ("description", args.description)):
        if value is not None:
            setattr(endpoint, name, value)
            paths.append(name)
    if args.type is not None:
        endpoint.event_types.extend(args.type)
        paths.append("event_types")
    if args.enable or args.disable:
        endpoint.state = pb.WEBHOOK_ENDPOINT_STATE_ENABLED if args.enable else pb.WEBHOOK_ENDPOINT_STATE_DISABLED
        paths.append("state")
    request = pb.UpdateWebhookEndpointRequest(endpoint=endpoint, update_mask=field_mask_pb2.FieldMask(paths=paths))
    show(await client.webhooks.UpdateWebhookEndpoint(request, metadata=client.metadata))


async def rotate(args, client) -> None:
    request = pb.RotateWebhookSecretRequest(id=args.endpoint_id)
    show(await client.webhooks.RotateWebhookSecret(request, metadata=client.metadata))


async def deliveries(args, client) -> None:
    request = pb.ListWebhookDeliveriesRequest(
        endpoint_id=args.endpoint,
        state=f"WEBHOOK_DELIVERY_STATE_{STATES[args.state]}" if args.state else None,
        page_size=min(args.limit, 100),
    )
    page = await client.webhooks.ListWebhookDeliveries(request, metadata=client.metadata)
    rows = [
        [
            d.id,
            d.endpoint_id,
            d.event.type,
            d.event.subject_id,
            pb.WebhookDeliveryState.Name(d.state).removeprefix("WEBHOOK_DELIVERY_STATE_"),
            d.attempt_count,
            d.last_status_code or "",
            d.last_error,
        ]
        for d in page.deliveries
    ]
    write_csv(None, ["id", "endpoint_id", "event", "subject", "state", "attempts", "last_status", "last_error"], rows)
    print(f"{len(rows)} of {page.total_size}", file=sys.stderr)


async def delivery(args, client) -> None:
    show(
        await client.webhooks.GetWebhookDelivery(
            pb.GetWebhookDeliveryRequest(id=args.delivery_id), metadata=client.metadata
        )
    )


async def redeliver(args, client) -> None:
    show(
        await client.webhooks.RedeliverWebhook(
            pb.RedeliverWebhookRequest(id=args.delivery_id), metadata=client.metadata
        )
    )


async def listen(args, client) -> None:
    """Answers 204 to a delivery whose signature verifies (and prints it), 401 to one that does not."""
    url = f"http://{args.host}:{args.port}{args.path}"
    secret = args.secret
    if args.register:
        endpoint = await _create(args, client, url)
        secret = endpoint.secret
        print(f"registered webhook endpoint {endpoint.id} for {url}", file=sys.stderr)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            delivery_id = webhook_signature.verify(secret, dict(request.headers), body)
        except webhook_signature.SignatureRefused as refused:
            print(f"refused a request: {refused}", file=sys.stderr, flush=True)
            return web.Response(status=401, text=str(refused))
        print(json.dumps({"delivery_id": delivery_id, "verified": True, "event": json.loads(body)}), flush=True)
        return web.Response(status=204)

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post(args.path, receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"listening on {url}; each verified delivery is one line here (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
