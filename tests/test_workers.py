"""WORKERS=2: auth as `python -m services.auth`, a supervisor with two worker processes on one port
(kernel/workers.py). Which worker served a call is read from its access log line, which carries its pid;
each call goes over a channel of its own (its own TCP connection), which the kernel hands to one worker.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from kernel.localdb import free_port
from kernel.ports import is_free
from kernel.settings import ROOT, Settings, cores
from suite.processes import Component, wait_serving
from tests.support import TEST_CLIENT_LIMIT

# A channel of its own per call: without a local subchannel pool, channels of one process share connections.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Workers:
    """A supervised auth service; its log (supervisor and workers) in one file."""

    def __init__(self, database_url: str, run_dir: Path, **env: str):
        self.port, self.metrics_port = free_port(), free_port()
        self.log_path = run_dir / "auth.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RUN_DIR": str(run_dir),
            "AUTH_PORT": str(self.port),
            "METRICS_PORT": str(self.metrics_port),
            "WORKERS": "2",
            "LOGIN_MAX_FAILURES_PER_CLIENT": str(TEST_CLIENT_LIMIT),
            **env,
        }
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.auth"], cwd=ROOT, env=self.env, stdout=log, stderr=log
            )
        await wait_serving(Component("auth", self.port, self.process, self.log_path))
        await self.wait_for_workers(2)

    def worker_pids(self) -> set[int]:
        assert self.process is not None
        return {child.pid for child in psutil.Process(self.process.pid).children()}

    async def wait_for_workers(self, count: int, timeout: float = 30) -> set[int]:
        """The pids of `count` workers that have each logged that they serve."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            serving = {line["pid"] for line in self.lines() if line.get("message") == "serving"}
            if len(pids) == count and pids <= serving:
                return pids
            assert time.monotonic() < deadline, f"workers {pids}, serving {serving}; see {self.log_path}"
            await asyncio.sleep(0.1)

    async def wait_for_line(self, message: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while not (found := [line for line in self.lines() if line.get("message") == message]):
            assert time.monotonic() < deadline, f"no {message!r} line; see {self.log_path}"
            await asyncio.sleep(0.1)
        return found[0]

    def lines(self) -> list[dict]:
        found = []
        for raw in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(raw))
        return found

    def pids_serving(self, request_ids: set[str]) -> set[int]:
        """The workers whose access log holds those calls."""
        return {line["pid"] for line in self.lines() if line.get("request_id") in request_ids}

    def rpcs(self, method: str, code: str = "OK") -> float:
        """coupons_rpcs_total for one auth method, as the supervisor serves it (summed over workers)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "coupons_rpcs_total" and sample.labels == {
                    "component": "auth",
                    "method": method,
                    "code": code,
                }:
                    return sample.value
        return 0.0

    def stop(self) -> int | None:
        """SIGTERM to the supervisor, SIGKILL to it and its workers if it hangs; its exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        pids = self.worker_pids()
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            for pid in (self.process.pid, *pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()
            raise


@pytest.fixture
async def workers(database_url, tmp_path):
    supervised = Workers(database_url, tmp_path)
    try:
        await supervised.start()
        yield supervised
    finally:
        # Off the loop the session's in-process servers run on; a clean stop of every worker is 0.
        assert await asyncio.to_thread(supervised.stop) == 0


async def signing_keys(port: int, count: int) -> set[str]:
    """`count` GetSigningKeys calls, each over a connection of its own; their request ids."""
    request_ids = {f"workers-{uuid.uuid4().hex}" for _ in range(count)}

    async def call(request_id: str) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) as channel:
            await auth_pb2_grpc.AuthServiceStub(channel).GetSigningKeys(
                auth_pb2.GetSigningKeysRequest(), metadata=(("x-request-id", request_id),), timeout=10
            )

    await asyncio.gather(*(call(request_id) for request_id in request_ids))
    return request_ids


def test_workers_default_to_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("WORKERS", raising=False)
    assert Settings.from_env("auth").workers == cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("WORKERS", "0")
    with pytest.raises(SystemExit, match="WORKERS must be between 1 and 64"):
        Settings.from_env("auth")


async def test_two_workers_answer_on_one_port_and_the_metrics_add_up_over_both(workers):
    pids = workers.worker_pids()
    assert len(pids) == 2 and workers.process is not None and workers.process.pid not in pids
    request_ids = await signing_keys(workers.port, 40)
    assert workers.pids_serving(request_ids) == pids  # both served: 2^-39 odds that one worker got all 40
    assert workers.rpcs("GetSigningKeys") == 40  # one endpoint, the sum of both workers' counts
    async with grpc.aio.insecure_channel(f"127.0.0.1:{workers.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_worker_killed_with_sigkill_is_replaced_and_the_port_keeps_answering(workers):
    before = await signing_keys(workers.port, 10)
    killed, survivor = sorted(workers.worker_pids())
    os.kill(killed, signal.SIGKILL)
    exited = await workers.wait_for_line("worker exited")
    assert (exited["pid"], exited["exit_code"]) == (killed, -signal.SIGKILL)
    during = await signing_keys(workers.port, 10)  # every one answered, the replacement starting or not
    assert killed not in workers.pids_serving(during)
    pids = await workers.wait_for_workers(2)
    assert survivor in pids and killed not in pids
    after = await signing_keys(workers.port, 40)
    assert workers.pids_serving(after) == pids  # the replacement serves too
    # The killed worker's counts stay in the sum (mark_process_dead drops only live gauges' files).
    assert workers.rpcs("GetSigningKeys") == len(before) + len(during) + len(after)


async def test_sigterm_stops_both_workers_gracefully_and_in_flight_calls_finish(database_url, tmp_path):
    # bcrypt at cost 13 (half a second per hash, 16 of them on the machine's cores) keeps every Register in
    # flight when SIGTERM comes; the grace covers a slow machine.
    supervised = Workers(database_url, tmp_path, BCRYPT_ROUNDS="13", SHUTDOWN_GRACE_SECONDS="60")
    await supervised.start()
    try:
        pids = supervised.worker_pids()
        request_ids = {f"in-flight-{uuid.uuid4().hex}" for _ in range(16)}

        async def register(request_id: str) -> auth_pb2.Session:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{supervised.port}", options=OWN_CONNECTION) as channel:
                return await auth_pb2_grpc.AuthServiceStub(channel).Register(
                    auth_pb2.RegisterRequest(email=f"{request_id}@example.com", password="correct-horse"),
                    metadata=(("x-request-id", request_id),),
                    timeout=90,
                )

        calls = [asyncio.create_task(register(request_id)) for request_id in request_ids]
        await asyncio.sleep(0.2)
        assert supervised.process is not None
        supervised.process.send_signal(signal.SIGTERM)
        sessions = await asyncio.gather(*calls)
        assert all(session.access_token for session in sessions)
        assert await asyncio.to_thread(supervised.process.wait, 90) == 0
        lines = supervised.lines()
        assert supervised.pids_serving(request_ids) == pids  # 2^-15 odds that one worker got all 16
        for pid in pids:  # each worker answered calls after its shutdown began, then stopped
            own = [line for line in lines if line.get("pid") == pid]
            messages = [line["message"] for line in own]
            began = messages.index("shutting down")
            assert any(line.get("request_id") in request_ids for line in own[began:]), messages
            assert messages[-1] == "stopped"
        assert not any(psutil.pid_exists(pid) for pid in pids)
        assert is_free(supervised.port)
    finally:
        await asyncio.to_thread(supervised.stop)


async def test_sigterm_while_the_workers_start_is_a_clean_stop(database_url, tmp_path):
    # Kubernetes may stop a pod that is still starting: the workers, still importing, die of the forwarded
    # signal (-15) before they install their handler, and that is not a failure.
    supervised = Workers(database_url, tmp_path)
    with open(supervised.log_path, "ab") as log:
        supervised.process = subprocess.Popen(
            [sys.executable, "-m", "services.auth"], cwd=ROOT, env=supervised.env, stdout=log, stderr=log
        )
    try:
        await supervised.wait_for_line("worker started")
        supervised.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervised.process.wait, 60) == 0, supervised.log_path.read_text()[-3000:]
        assert not [line for line in supervised.lines() if line.get("message") == "workers serving"]
    finally:
        await asyncio.to_thread(supervised.stop)


@pytest.mark.parametrize("holder", ["a listener", "another service's workers (SO_REUSEPORT)"])
async def test_a_taken_port_is_refused_with_the_variable_to_change(database_url, tmp_path, holder):
    supervised = Workers(database_url, tmp_path)
    with contextlib.closing(socket.socket()) as taken:
        if "REUSEPORT" in holder:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", supervised.port))
        taken.listen()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.auth"],
            cwd=ROOT,
            env=supervised.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"AUTH_PORT (auth): port {supervised.port} on 127.0.0.1 is already in use" in done.stderr
    assert "Traceback" not in done.stderr and "worker started" not in done.stderr


async def test_only_the_first_worker_runs_the_background_jobs_and_so_does_its_replacement(workers):
    """auth's one background job (its retention purge) runs in worker 0 alone, and in whatever replaces it."""

    def live_workers() -> dict[int, tuple[int, int]]:
        """Each live worker's index: its pid and how many background jobs it started."""
        lines = workers.lines()
        jobs = {line["pid"]: line["background_jobs"] for line in lines if line.get("message") == "serving"}
        live = workers.worker_pids()
        started = [line for line in lines if line.get("message") == "worker started" and line["pid"] in live]
        return {line["worker"]: (line["pid"], jobs[line["pid"]]) for line in started}

    before = live_workers()
    assert {index: jobs for index, (_, jobs) in before.items()} == {0: 1, 1: 0}
    os.kill(before[0][0], signal.SIGKILL)
    await workers.wait_for_line("worker exited")
    await workers.wait_for_workers(2)
    after = live_workers()
    assert after[0][0] != before[0][0] and after[1] == before[1]  # a new first worker, the other untouched
    assert {index: jobs for index, (_, jobs) in after.items()} == {0: 1, 1: 0}
