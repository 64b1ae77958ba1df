"""Delivers webhooks: claims due deliveries, POSTs each signed event, records the attempt, schedules the
next try or the dead letter.

A claim is committed before the request is sent and lasts WEBHOOK_LEASE_SECONDS (longer than an attempt
may take), so replicas never try one delivery at the same time, and a dispatcher killed mid-attempt
leaves the delivery to be tried again, with the same delivery id, when its lease runs out: at least once.
Finished attempts are recorded together with the next claims, a round at a time in one statement.
The clock is injectable: the schedule is computed from it, so tests can step through it.
"""

import asyncio
import datetime as dt
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import aiohttp
from google.protobuf import json_format

from kernel import webhook_signature
from kernel.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_BACKLOG, WEBHOOK_OLDEST_PENDING
from kernel.settings import Settings
from services.events.watch import stored_event
from services.events.webhook_model import Attempt, AttemptOutcome, Claim, DeliveryState, Outcome
from services.events.webhook_repository import WebhookRepository
from services.events.webhook_targets import GuardedResolver, TargetRefused, check_literal, networks
from services.events.webhooks import Schedule

log = logging.getLogger("services.events.dispatcher")
BACKLOG_EVERY_SECONDS = 5.0
RETRY_SECONDS = 1.0
ROUND_SECONDS = 0.02  # at most ~50 rounds (one statement each) a second per dispatcher, however busy
USER_AGENT = "coupons-webhooks/1"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def body_of(claim: Claim) -> bytes:
    """The request body: the event as the watch's JSON shows it (proto field names)."""
    document = json_format.MessageToDict(stored_event(claim.event), preserving_proto_field_name=True)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def answered(attempts: Iterable[asyncio.Task]) -> list[Outcome]:
    """The outcomes of finished attempt tasks. One that failed inside the dispatcher (a bug, a stored secret
    that cannot sign) is logged and left unrecorded, like a crash: its delivery is tried again when its
    lease runs out, and the dispatcher goes on with the others."""
    outcomes = []
    for task in attempts:
        error = task.exception()
        if error is None:
            outcomes.append(task.result())
        else:
            log.error("a webhook attempt failed in the dispatcher", extra={"fields": {"error": repr(error)[:300]}})
    return outcomes


class Dispatcher:
    def __init__(
        self,
        repository: WebhookRepository,
        settings: Settings,
        clock: Callable[[], dt.datetime] = utc_now,
        rand: random.Random | None = None,
    ):
        self.repo = repository
        self.clock = clock
        self.rand = rand or random.Random()
        self.schedule = Schedule(
            settings.webhook_max_attempts, settings.webhook_first_retry_seconds, settings.webhook_max_retry_seconds
        )
        self.timeout = settings.webhook_timeout_seconds
        self.lease = dt.timedelta(seconds=settings.webhook_lease_seconds)
        self.concurrency = settings.webhook_concurrency
        self.claim_at_least = max(1, self.concurrency // 4)
        self.poll_seconds = settings.events_poll_seconds
        self.allowed_networks = networks(settings.webhook_allowed_networks)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made in the running loop
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allowed_networks), limit=self.concurrency)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})
        return self._session

    async def run(self) -> None:
        """The background job: keeps up to WEBHOOK_CONCURRENCY attempts in flight. Each round records the
        attempts finished since the last one and claims more, in one statement however many."""
        in_flight: set[asyncio.Task] = set()
        finished: list[Outcome] = []
        backlog_at = 0.0
        while True:
            done = {task for task in in_flight if task.done()}
            finished += answered(done)
            in_flight -= done
            free = self.concurrency - len(in_flight)
            wanted = free if free >= self.claim_at_least or not in_flight else 0  # no one-row claims while busy
            try:
                claims = await self.round(finished, wanted) if finished or wanted else []
                finished = []
                if time.monotonic() - backlog_at > BACKLOG_EVERY_SECONDS:
                    backlog_at = time.monotonic()
                    await self.report_backlog()
            except Exception as error:  # the database away: unrecorded outcomes are kept for the next round
                fields = {"error": str(error)[:200]}
                log.warning("recording or claiming webhook deliveries failed", extra={"fields": fields})
                await asyncio.sleep(RETRY_SECONDS)
                continue
            in_flight |= {asyncio.create_task(self.attempt(claim)) for claim in claims}
            if in_flight:
                await asyncio.wait(in_flight, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                await asyncio.sleep(ROUND_SECONDS)  # let more finish: a round records many, not one
            else:
                await asyncio.sleep(self.poll_seconds)

    async def dispatch_once(self) -> int:
        """Claims what is due now, makes those attempts and records them; how many (for tests and tools)."""
        claims = await self.round([], max(self.concurrency, 1))
        attempts = [asyncio.create_task(self.attempt(claim)) for claim in claims]
        if attempts:
            await asyncio.wait(attempts)
        await self.round(answered(attempts), 0)
        return len(claims)

    async def round(self, finished: list[Outcome], wanted: int) -> list[Claim]:
        """Records what finished and claims up to `wanted` due deliveries, in one statement."""
        now = self.clock()
        claims = await self.repo.settle_and_claim(finished, now, now + self.lease, wanted)
        for outcome in finished:
            WEBHOOK_ATTEMPTS.labels(outcome.attempt.outcome.value).inc()
            if outcome.state is DeliveryState.DEAD_LETTER:
                fields = {"delivery_id": outcome.claim.delivery_id, "endpoint_id": outcome.claim.endpoint_id}
                log.warning(
                    "webhook delivery dead-lettered", extra={"fields": {**fields, "error": outcome.attempt.error}}
                )
        return claims

    async def report_backlog(self) -> None:
        pending, oldest = await self.repo.backlog(self.clock())
        WEBHOOK_BACKLOG.set(pending)
        WEBHOOK_OLDEST_PENDING.set(oldest)

    async def _send(self, claim: Claim) -> tuple[AttemptOutcome, int, str]:
        body = body_of(claim)
        headers = webhook_signature.headers(claim.secret, claim.delivery_id, int(time.time()), body)
        headers["Content-Type"] = "application/json"
        try:
            check_literal(urlsplit(claim.url).hostname or "", self.allowed_networks)
            async with self._http().post(
                claim.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,  # a redirect could lead past the address checks
            ) as response:
                status = response.status
        except TargetRefused as error:
            return AttemptOutcome.TARGET_REFUSED, 0, str(error)[:300]
        except TimeoutError:
            return AttemptOutcome.TIMEOUT, 0, f"no answer within {self.timeout:g} s"
        except (aiohttp.ClientError, OSError) as error:
            return AttemptOutcome.CONNECTION_FAILED, 0, (str(error) or type(error).__name__)[:300]
        if 200 <= status < 300:
            return AttemptOutcome.SUCCEEDED, status, ""
        return AttemptOutcome.HTTP_ERROR, status, f"HTTP {status}"

    async def attempt(self, claim: Claim) -> Outcome:
        started, began = self.clock(), time.monotonic()
        outcome, status, error = await self._send(claim)
        attempt = Attempt(claim.attempt_number, started, int((time.monotonic() - began) * 1000), outcome, status, error)
        now = self.clock()
        if outcome is AttemptOutcome.SUCCEEDED:
            return Outcome(claim, attempt, DeliveryState.DELIVERED, now, now)
        wait = self.schedule.wait_after(claim.round_tries, self.rand)
        if wait is None:
            return Outcome(claim, attempt, DeliveryState.DEAD_LETTER, now, now)
        return Outcome(claim, attempt, DeliveryState.PENDING, now + dt.timedelta(seconds=wait), now)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
