"""The bench's table: printed, written as markdown (bench/results/latest.md) and as JSON beside it."""

import dataclasses
import json
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _value(value, unit: str) -> str:
    if value is None:
        return "–"
    if unit in ("calls/s", "redeems/s", "codes/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("redeems", "runs with a violation", "locks", "calls"):
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:,.2f} {unit}"


def _status(met) -> str:
    return "" if met is None else ("met" if met else "**missed**")


COLUMNS = (
    "redemption",
    "gateway",
    "books",
    "pools",
    "auth",
    "events",
    "webhook receiver",
    "postgres",
    "load generator",
    "other processes",
)


def _cpu_table(cpu: dict) -> list[str]:
    """Share of the machine by process group during each run (median run)."""
    lines = ["| run | seconds | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for name, shares in cpu.items():
        share = shares[len(shares) // 2]
        percent = share.percent()
        cells = [f"{percent.get(k, 0):.0f}%" for k in COLUMNS]
        lines.append(f"| {name} | {share.seconds:.1f} | " + " | ".join(cells) + " |")
    return lines


def _cpu_per_operation_table(cpu: dict) -> list[str]:
    """CPU milliseconds per call by process group (a service counts all its workers), median run."""
    lines = ["| run | calls | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for name, shares in cpu.items():
        share = shares[len(shares) // 2]
        if not share.operations:
            continue
        per_call = share.per_operation_ms()
        cells = [f"{per_call.get(k, 0):.3f}" for k in COLUMNS]
        lines.append(f"| {name} | {share.operations:,} | " + " | ".join(cells) + " |")
    return lines


def markdown(bench, environment: dict, wall_seconds: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {environment['cores']} cores, {environment['platform']}; Python {environment['python']}, "
        f"grpcio {environment['grpcio']}, {environment['postgres']} (embedded wheel; fsync={environment['fsync']}, "
        f"synchronous_commit={environment['synchronous_commit']}, shared_buffers={environment['shared_buffers']}).",
        f"Each figure is the median of {bench.config.runs} runs ({bench.config.generation_runs} for generation; "
        f"closed-loop windows of {bench.config.seconds:g} s after {bench.config.warmup:g} s of warm-up, "
        f"{bench.config.processes} load-generator processes); bench wall time {wall_seconds:.0f} s.",
        "",
        "| section | figure | value | runs | target | ratio | status |",
        "|---|---|---:|---|---|---:|---|",
    ]
    for f in bench.figures:
        runs = ", ".join(f"{r:g}" for r in f.runs) if f.runs else ""
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
        lines.append(
            f"| {f.section} | {f.label} | {_value(f.value, f.unit)} | {runs} | {f.target} | {ratio} | "
            f"{_status(f.met)} |"
        )
    notes = [f"- {f.label}: {f.note}" for f in bench.figures if f.note] + [f"- {n}" for n in bench.notes]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += [
        "",
        "## CPU share during the runs (median run, over its measurement window when it has one; 200% = both cores)",
        "",
        *_cpu_table(bench.cpu),
    ]
    lines += [
        "",
        "## CPU per call (ms of CPU per call made, median run; `_wN` = the redemption service's WORKERS)",
        "",
        *_cpu_per_operation_table(bench.cpu),
    ]
    return "\n".join(lines) + "\n"


def terminal(bench) -> str:
    width = max(len(f"{f.section} / {f.label}") for f in bench.figures) if bench.figures else 20
    lines = []
    for f in bench.figures:
        ratio = f"ratio {f.ratio:.2f}" if f.ratio is not None else ""
        lines.append(
            f"{f.section + ' / ' + f.label:<{width}}  {_value(f.value, f.unit):>22}  {ratio:<11} "
            f"{f.target} {('MET' if f.met else 'MISSED') if f.met is not None else ''}".rstrip()
        )
    return "\n".join(lines)


def write(bench, environment: dict, wall_seconds: float) -> Path:
    RESULTS.mkdir(exist_ok=True)
    text = markdown(bench, environment, wall_seconds)
    (RESULTS / "latest.md").write_text(text)
    data = {
        "environment": environment,
        "wall_seconds": wall_seconds,
        "config": dataclasses.asdict(bench.config),
        "figures": [dataclasses.asdict(f) for f in bench.figures],
        "checks": bench.violations,
        "cpu": {k: [dataclasses.asdict(s) for s in v] for k, v in bench.cpu.items()},
        "details": bench.details,
        "notes": bench.notes,
    }
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=2, default=str))
    return RESULTS / "latest.md"


def environment(stack) -> dict:
    import grpc

    from bench.stack import cpu_count, postgres_version

    settings = stack.pg_settings()
    return {
        "cores": cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "postgres": postgres_version(),
        "fsync": settings.get("fsync"),
        "synchronous_commit": settings.get("synchronous_commit"),
        "shared_buffers": f"{int(settings.get('shared_buffers', 0)) * 8 // 1024} MB",
    }
