"""The suite as `make run` starts it: separate processes answering grpcurl, health, curl, metrics, logs."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from coupons.books.v1 import books_pb2, books_pb2_grpc
from kernel.settings import ROOT
from suite.processes import wait_serving
from tests.fixtures_suite import free_suite_ports

GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"
SERVICE_NAMES = {
    "auth": "coupons.auth.v1.AuthService",
    "books": "coupons.books.v1.BookService",
    "redemption": "coupons.redemption.v1.RedemptionService",
    "pools": "coupons.pools.v1.PoolService",
    "events": "coupons.events.v1.EventService",
}


def _grpcurl(*args: str) -> str:
    binary = str(GRPCURL) if GRPCURL.exists() else shutil.which("grpcurl")
    if binary is None:
        pytest.skip("grpcurl is not installed (make installs it into .venv with the dev extras)")
    return subprocess.run([binary, "-plaintext", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def _curl(*args: str) -> str:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"curl {' '.join(args)}: {done.stdout} {done.stderr}"
    return done.stdout


@pytest.mark.parametrize("component", list(SERVICE_NAMES))
def test_every_service_answers_grpcurl_list_and_health(running_suite, component):
    address = f"127.0.0.1:{running_suite.ports[component]}"
    listed = _grpcurl(address, "list").split()
    assert SERVICE_NAMES[component] in listed and "grpc.health.v1.Health" in listed
    health = json.loads(_grpcurl(address, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"


def _login(gateway_base: str, email: str, password: str) -> str:
    body = json.dumps({"email": email, "password": password})
    return json.loads(_curl("-X", "POST", f"{gateway_base}/api/v1/auth/login", "-d", body))["access_token"]


def test_curl_through_the_gateway(gateway_base):
    token = _login(gateway_base, "alice@example.com", "demo123")
    coupons = json.loads(_curl(f"{gateway_base}/api/v1/users/me/coupons", "-H", f"authorization: Bearer {token}"))
    assert coupons["coupons"] and all(c["user_id"] == coupons["coupons"][0]["user_id"] for c in coupons["coupons"])


def test_a_request_id_follows_the_call_through_every_service(running_suite, gateway_base):
    token = _login(gateway_base, "admin@example.com", "admin123")
    books = json.loads(
        _curl(f"{gateway_base}/api/v1/books?name_contains=Summer", "-H", f"authorization: Bearer {token}")
    )
    book_id = books["books"][0]["id"]
    request_id = f"trace-{uuid.uuid4().hex}"
    # gateway -> books -> redemption (GetBookStats asks the ledger for its counts)
    stats = json.loads(
        _curl(
            f"{gateway_base}/api/v1/books/{book_id}/stats",
            "-H",
            f"authorization: Bearer {token}",
            "-H",
            f"x-request-id: {request_id}",
        )
    )
    assert int(stats["total"]) > 0
    for name in ("gateway", "books", "redemption"):
        log = (running_suite.run_dir / "logs" / f"{name}.log").read_text()
        lines = [json.loads(line) for line in log.splitlines() if request_id in line]
        assert lines and all(line["request_id"] == request_id for line in lines), f"{name} did not log {request_id}"


def test_metrics_endpoint_exposes_rpc_and_redemption_metrics(running_suite, gateway_base):
    token = _login(gateway_base, "bob@example.com", "demo123")
    admin = _login(gateway_base, "admin@example.com", "admin123")
    books = json.loads(
        _curl(f"{gateway_base}/api/v1/books?name_contains=Welcome%20Gift", "-H", f"authorization: Bearer {admin}")
    )
    coupon = json.loads(
        _curl(
            "-X",
            "POST",
            f"{gateway_base}/api/v1/coupons/assign",
            "-H",
            f"authorization: Bearer {token}",
            "-d",
            json.dumps({"book_id": books["books"][0]["id"]}),
        )
    )
    _curl(
        "-X", "POST", f"{gateway_base}/api/v1/coupons/redeem/{coupon['code']}", "-H", f"authorization: Bearer {token}"
    )
    port = running_suite.ports["redemption"] + 1000
    exposed = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'coupons_rpcs_total{code="OK",component="redemption",method="RedeemCoupon"}' in exposed
    assert "coupons_rpc_duration_seconds_bucket" in exposed
    assert f'coupons_redemptions_total{{book_id="{books["books"][0]["id"]}"}}' in exposed


async def test_sigterm_finishes_in_flight_calls_then_exits(running_suite, tmp_path):
    """A second books process streams a generation; SIGTERM mid-stream lets it finish, then it exits 0."""
    port = free_suite_ports()["books"]
    env = {**running_suite.environment(), "BOOKS_PORT": str(port), "METRICS_PORT": "0"}
    log = open(tmp_path / "books-sigterm.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "services.books"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        from suite.processes import Component

        await wait_serving(Component("books-extra", port, process, tmp_path / "books-sigterm.log"))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running_suite.ports['auth']}") as auth_channel:
            admin = await auth_pb2_grpc.AuthServiceStub(auth_channel).Login(
                auth_pb2.LoginRequest(email="admin@example.com", password="admin123")
            )
        metadata = (("authorization", f"Bearer {admin.access_token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            books = books_pb2_grpc.BookServiceStub(channel)
            book = await books.CreateBook(
                books_pb2.CreateBookRequest(
                    book=books_pb2.Book(name=f"Shutdown {uuid.uuid4().hex[:6]}", code_pattern="SD-{}", code_length=10)
                ),
                metadata=metadata,
            )
            stream = books.GenerateCodes(
                books_pb2.GenerateCodesRequest(book_id=book.id, count=300_000), metadata=metadata
            )
            first = await stream.read()
            assert not first.done
            process.send_signal(signal.SIGTERM)
            last = first
            while (update := await stream.read()) is not grpc.aio.EOF:
                last = update
            assert last.done and last.generated == 300_000
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


class Cli:
    """`python -m cli` against the running suite, signed in with a token file of the test's own."""

    def __init__(self, running_suite, tmp_path):
        self.env = {**os.environ, "COUPONS_CLI_TOKEN_FILE": str(tmp_path / "token")}
        self.command = [sys.executable, "-m", "cli"]
        self.command += [f"--{name}=127.0.0.1:{running_suite.ports[name]}" for name in SERVICE_NAMES]

    def __call__(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*self.command, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == expect, done.stdout + done.stderr
        return done

    def start(self, *args: str, **options) -> subprocess.Popen:
        """A command that runs until stopped (events, webhooks listen), its output on pipes."""
        return subprocess.Popen([*self.command, *args], cwd=ROOT, env=self.env, text=True, **options)


def test_cli_against_the_running_suite(running_suite, tmp_path):
    cli = Cli(running_suite, tmp_path)
    cli("login", "admin@example.com", "--password", "admin123")
    created = json.loads(
        cli(
            "books", "create", "--name", f"CLI book {uuid.uuid4().hex[:6]}", "--pattern", "CLI-{}", "--length", "8"
        ).stdout
    )
    generated = cli("codes", "generate", created["id"], "20000")
    assert "generating [" in generated.stderr and "20,000/20,000" in generated.stderr

    upload = tmp_path / "codes.csv"
    upload.write_text("code\nGOOD-CODE-0001\nGOOD-CODE-0002\nBAD CODE!\nGOOD-CODE-0001\nX\n")
    report = cli("codes", "upload", created["id"], str(upload), expect=1)
    assert "stored 2" in report.stdout and "refused 3" in report.stdout
    assert "INVALID_CHARACTERS" in report.stdout and "DUPLICATE_IN_UPLOAD" in report.stdout

    exported = tmp_path / "export.csv"
    cli("codes", "export", created["id"], "-o", str(exported))
    assert len(exported.read_text().splitlines()) == 1 + 20_002

    stats = json.loads(cli("books", "stats", created["id"]).stdout)
    assert int(stats["available"]) == 20_002

    pools = cli("distribute", "--help").stdout
    assert "--preview" in pools
    pool_id = _beta_testers(running_suite, tmp_path)
    preview = cli("distribute", pool_id, created["id"], "--mode", "equal", "--per-member", "2", "--preview")
    assert "satisfiable: yes" in preview.stdout
    distribution = json.loads(cli("distribute", pool_id, created["id"], "--mode", "equal", "--per-member", "2").stdout)
    assert int(distribution["assigned"]) == 2 * len(distribution["members"])

    # The shared demo code, validated, redeemed for an order and rolled back (as the admin).
    validated = json.loads(cli("validate", "WELCOME10", "--amount", "30", "--currency", "EUR").stdout)
    assert validated["discount"] == "3.00"
    redeemed = json.loads(cli("redeem", "WELCOME10", "--order", "cli-1", "--amount", "30", "--currency", "EUR").stdout)
    assert redeemed["discount"] == "3.00"
    rolled_back = json.loads(cli("rollback", "WELCOME10", "--order", "cli-1", "--reason", "test").stdout)
    assert rolled_back["discount"] == "3.00"
    history = cli("history", "--code", "WELCOME10").stdout
    assert "ROLLED_BACK_EVENT" in history and "cli-1" in history
    # ... and the rollback is an event on the watch (which runs until interrupted: read to it, then stop;
    # other tests roll back codes of their own in this database too).
    watching = cli.start("events", "--from-oldest", "--type", "coupon.rolled_back", stdout=subprocess.PIPE)
    try:
        while (event := json.loads(watching.stdout.readline()))["data"].get("order_reference") != "cli-1":
            pass  # the test's timeout bounds this
    finally:
        watching.kill()
        watching.wait()
    assert (event["type"], event["subject_id"], event["data"]["order_reference"]) == (
        "coupon.rolled_back",
        "WELCOME10",
        "cli-1",
    )

    refused = cli("books", "create", "--name", "", expect=1)
    assert "INVALID_ARGUMENT" in refused.stderr and "Traceback" not in refused.stderr


def test_a_webhook_to_the_clis_receiver_arrives_signed(running_suite, tmp_path):
    """docs/try-it.md's walkthrough: a receiver started from the CLI registers itself, a code is redeemed,
    the receiver prints the verified event; the delivery is listed as delivered."""
    cli = Cli(running_suite, tmp_path)
    cli("login", "admin@example.com", "--password", "admin123")
    book = json.loads(cli("books", "create", "--name", f"Hooked {uuid.uuid4().hex[:6]}").stdout)
    cli("codes", "generate", book["id"], "1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listening = cli.start(
        *("webhooks", "listen", "--port", str(port), "--register", "--book", book["id"], "--type", "coupon.redeemed"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        registered = listening.stderr.readline()
        assert "registered webhook endpoint" in registered, registered + listening.stderr.read()
        endpoint_id = registered.split()[3]
        assert "listening on" in listening.stderr.readline()
        coupon = json.loads(cli("assign", "--book", book["id"], "--email", "admin@example.com").stdout)
        cli("redeem", coupon["code"], "--order", "hooked-1")
        line = json.loads(listening.stdout.readline())  # the test's timeout bounds the wait
        # The receiver prints before it answers: the delivery is recorded once the answer is back.
        while ",DELIVERED," not in (listed := cli("webhooks", "deliveries", "--endpoint", endpoint_id).stdout):
            time.sleep(0.1)
    finally:
        listening.terminate()
        listening.wait(timeout=10)
    assert line["verified"] and line["event"]["type"] == "coupon.redeemed"
    assert line["event"]["subject_id"] == coupon["code"] and line["event"]["data"]["order_reference"] == "hooked-1"
    rows = listed.splitlines()
    assert len(rows) == 2 and rows[1].startswith(line["delivery_id"]) and ",DELIVERED,1,204," in rows[1]
    assert "Traceback" not in cli("webhooks", "delivery", line["delivery_id"]).stderr


def _beta_testers(running_suite, tmp_path) -> str:
    async def find() -> str:
        from coupons.pools.v1 import pools_pb2, pools_pb2_grpc

        token = Path(tmp_path / "token").read_text()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running_suite.ports['pools']}") as channel:
            listing = await pools_pb2_grpc.PoolServiceStub(channel).ListPools(
                pools_pb2.ListPoolsRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        return next(p.id for p in listing.pools if p.name == "Beta Testers")

    return asyncio.run(find())


async def test_all_four_services_in_one_process(running_suite, tmp_path):
    """`python -m services all`: one process, four servers, the same behaviour across them."""
    ports = free_suite_ports()
    env = {
        **running_suite.environment(),
        "RUN_DIR": str(tmp_path),
        "METRICS_PORT": "0",
        **{f"{name.upper()}_PORT": str(ports[name]) for name in SERVICE_NAMES},
        **{f"{name.upper()}_ADDR": f"127.0.0.1:{ports[name]}" for name in SERVICE_NAMES},
    }
    log_path = tmp_path / "all.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "services", "all"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        from suite.processes import Component

        for name in SERVICE_NAMES:
            await wait_serving(Component(name, ports[name], process, log_path))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['auth']}") as auth_channel:
            admin = await auth_pb2_grpc.AuthServiceStub(auth_channel).Login(
                auth_pb2.LoginRequest(email="admin@example.com", password="admin123")
            )
        metadata = (("authorization", f"Bearer {admin.access_token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['books']}") as channel:
            books = books_pb2_grpc.BookServiceStub(channel)
            listing = await books.ListBooks(books_pb2.ListBooksRequest(name_contains="Summer"), metadata=metadata)
            stats = await books.GetBookStats(books_pb2.GetBookStatsRequest(id=listing.books[0].id), metadata=metadata)
            assert stats.total > 0  # books -> redemption inside the same process, over gRPC
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
