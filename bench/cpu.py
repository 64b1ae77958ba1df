"""CPU seconds by component during a run: each service counted with its whole process tree (a
supervisor and its WORKERS), PostgreSQL as its postmaster and backends, the rest of the machine apart."""

import contextlib
import time
from dataclasses import dataclass

import psutil


def process_tree(pid: int | None) -> list[psutil.Process]:
    """The process and its descendants (a service's supervisor and its workers); [] when it is gone."""
    if pid is None:
        return []
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def _cpu(process: psutil.Process) -> float | None:
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return times.user + times.system
    return None


@dataclass
class CpuShare:
    """CPU seconds used by each component, PostgreSQL and the load generator during one run."""

    seconds: float
    by: dict[str, float]
    operations: int = 0  # calls made while it was measured, for CPU per operation

    def percent(self) -> dict[str, float]:
        return {k: round(100 * v / self.seconds, 1) for k, v in self.by.items()} if self.seconds else {}

    def per_operation_ms(self) -> dict[str, float]:
        return {k: 1000 * v / self.operations for k, v in self.by.items()} if self.operations else {}


class CpuMeter:
    def __init__(self, stack):
        self.stack = stack
        self.extra: dict[str, int] = {}  # processes of the bench's own counted apart, by name (a receiver)

    def _postgres(self) -> list[psutil.Process]:
        """This stack's postmaster and its children (other servers on the host are not ours)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.stack.database.data_dir / "postmaster.pid").read_text().split()[0])
            return process_tree(pid)
        return []

    def snapshot(self) -> dict[str, float]:
        """CPU seconds by (component or postgres, process id): processes come and go (backends, workers)."""
        values: dict[str, float] = {}
        for component in self.stack.suite.components:
            for process in process_tree(component.process.pid if component.process else None):
                if (spent := _cpu(process)) is not None:
                    values[f"{component.name}:{process.pid}"] = spent
        for name, pid in self.extra.items():
            for process in process_tree(pid):
                if (spent := _cpu(process)) is not None:
                    values[f"{name}:{process.pid}"] = spent
        for process in self._postgres():
            if (spent := _cpu(process)) is not None:
                values[f"postgres:{process.pid}"] = spent
        machine = psutil.cpu_times()
        values["machine"] = sum(
            getattr(machine, name, 0) for name in ("user", "system", "nice", "irq", "softirq", "steal")
        )
        return values

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Per component; a process that appeared during the run counts from zero. (One that ended during
        the run is lost: none should.)"""
        delta: dict[str, float] = {"postgres": 0.0}
        for key, value in after.items():
            if key == "machine":
                continue
            name = key.rsplit(":", 1)[0]
            delta[name] = delta.get(name, 0.0) + value - before.get(key, 0.0)
        # everything else the machine ran meanwhile (other users' processes; pgbench itself in its runs)
        delta["other processes"] = max(0.0, after["machine"] - before["machine"] - sum(delta.values()))
        return delta

    @contextlib.contextmanager
    def measure(self, into: list):
        before, started = self.snapshot(), time.monotonic()
        yield
        after, seconds = self.snapshot(), time.monotonic() - started
        into.append(CpuShare(seconds, self.delta(before, after)))
