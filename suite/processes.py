"""Starts each component as its own process (a gRPC service as one or more replicas) and waits until it
reports SERVING."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kernel.components import DEFAULT_PORTS, SERVICES
from kernel.settings import ROOT

# The web console as `make console` builds it; the suite's gateway serves it at / (GATEWAY_STATIC_DIR).
CONSOLE_DIR = ROOT / "console" / "dist"
# Replica i of a service listens on its port + REPLICA_PORT_STEP * i, and serves metrics 1000 above that.
REPLICA_PORT_STEP = 10
# A component still starting refuses connections; gRPC's default reconnect backoff (1 s, growing towards
# 120 s) would notice it serving seconds late, so the health poll reconnects within half a second.
HEALTH_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


def available_services() -> list[str]:
    return [name for name in SERVICES if (ROOT / "services" / name / "app.py").exists()]


def gateway_available() -> bool:
    return (ROOT / "gateway" / "__main__.py").exists()


def console_built() -> bool:
    return (CONSOLE_DIR / "index.html").exists()


@dataclass
class Component:
    name: str  # the component: auth, books, redemption, pools or gateway
    port: int
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    replica: int = 0  # which replica of the service (0 for the first or only one)
    label: str = ""  # how logs and the banner name this process: the name, or name-<replica+1> among several

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_port(self) -> int:
        return self.port + 1000


@dataclass
class Suite:
    database_url: str
    run_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    components: list[Component] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)  # processes per gRPC service; 1 when not named

    def replica_count(self, name: str) -> int:
        return 1 if name == "gateway" else self.replicas.get(name, 1)

    def replica_ports(self, name: str) -> list[int]:
        return [self.ports[name] + REPLICA_PORT_STEP * i for i in range(self.replica_count(name))]

    def target(self, name: str) -> str:
        """The gRPC target of every replica of a service (what its *_ADDR holds): round robin over them."""
        addresses = [f"127.0.0.1:{port}" for port in self.replica_ports(name)]
        return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

    def replicas_of(self, name: str) -> list[Component]:
        return [c for c in self.components if c.name == name]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "RUN_DIR": str(self.run_dir),
                "PYTHONUNBUFFERED": "1",
                **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
                **{f"{name.upper()}_ADDR": self.target(name) for name in self.ports if name != "gateway"},
                **self.extra_env,
            }
        )
        return env

    def start(self, name: str, module: str, replica: int = 0) -> Component:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        label = name if self.replica_count(name) == 1 else f"{name}-{replica + 1}"
        port = self.replica_ports(name)[replica]
        log_path = logs / f"{label}.log"
        component = Component(name, port, log_path=log_path, replica=replica, label=label)
        # Each process listens on its own port and serves Prometheus metrics on that port + 1000.
        env = {**self.environment(), f"{name.upper()}_PORT": str(port), "METRICS_PORT": str(component.metrics_port)}
        with open(log_path, "ab") as log:
            component.process = subprocess.Popen(
                [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        self.components.append(component)
        return component

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to every component (they finish in-flight calls), SIGKILL for any that hangs."""
        for component in self.components:
            if component.process and component.process.poll() is None:
                component.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for component in self.components:
            if component.process is None:
                continue
            try:
                component.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                component.process.kill()
                component.process.wait()


def _exited(component: Component, process: subprocess.Popen, lines: int = 8) -> RuntimeError:
    """The error for a component that exited while starting, with its log's last lines: a CI run keeps
    only what the test printed, not the run's log files."""
    try:
        tail = component.log_path.read_text(errors="replace").splitlines()[-lines:] if component.log_path else []
    except OSError:
        tail = []
    return RuntimeError(
        f"{component.label} exited with {process.returncode}; see {component.log_path}"
        + "".join(f"\n  | {line[:300]}" for line in tail)
    )


async def wait_serving(component: Component, timeout: float = 60.0) -> None:
    """Polls the standard health service until the component reports SERVING."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(component.address, options=HEALTH_CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if component.process and component.process.poll() is not None:
                raise _exited(component, component.process)
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{component.label} did not report SERVING within {timeout:.0f} s; see {component.log_path}"
                )
            await asyncio.sleep(0.2)


async def wait_http(component: Component, path: str = "/healthz", timeout: float = 60.0) -> None:
    """Waits until an HTTP component answers 200 at path (the gateway: every backend serving and routed)."""
    deadline = time.monotonic() + timeout
    while True:
        if component.process and component.process.poll() is not None:
            raise _exited(component, component.process)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", component.port)
            writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
            if status_line.split()[1:2] == [b"200"]:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{component.name} did not answer within {timeout:.0f} s; see {component.log_path}")
        await asyncio.sleep(0.2)
