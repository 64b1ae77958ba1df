"""A webhook receiver for tests: an HTTP server on loopback that answers with scripted statuses (or not at
all) and records every request it got."""

import asyncio
import contextlib
import dataclasses
import json
import time

from aiohttp import web

HANG = "hang"  # an answer that never comes (the dispatcher's timeout ends the attempt)


@dataclasses.dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    started: float  # time.monotonic() when the request arrived
    finished: float  # and when it was answered

    @property
    def delivery_id(self) -> str:
        return self.headers["webhook-id"]

    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self, answer_seconds: float = 0.0):
        self.answers: list[int | str] = []  # the next requests' answers, in order; then 200
        self.answer_seconds = answer_seconds  # how long each answer takes
        self.received: list[Received] = []
        self.url = ""
        self.arrived = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        body = await request.read()
        answer = self.answers.pop(0) if self.answers else 200
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.arrived.set()
        if answer == HANG:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.answer_seconds)
        self.received.append(Received(headers, body, started, time.monotonic()))
        return web.Response(status=int(answer))

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.02)
        return self.received


@contextlib.asynccontextmanager
async def receiving(path: str = "/hooks", answer_seconds: float = 0.0):
    receiver = Receiver(answer_seconds)
    app = web.Application()
    app.router.add_post(path, receiver._handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield receiver
    finally:
        await runner.cleanup()
