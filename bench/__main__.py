"""`make bench` / `python -m bench`: the benchmarks of issues 7, 11, 12 and 13 on a fresh local stack.

Options: --quick (1 run each, shorter windows, a shorter soak, smaller generation: a smoke test, not
figures), --only SECTION[,SECTION] (throughput, hot, shared, events, generation, assignment, distribution,
soak),
--profile (py-spy record of the redemption server during the first 32-caller gRPC redeem run).
"""

import argparse
import asyncio
import logging
import sys
import time

from bench import report
from bench.core import Bench, Config
from bench.events import events
from bench.hot import hot_code
from bench.load import LoadGenerator
from bench.shared_code import shared_code
from bench.soak import soak
from bench.stack import start_stack, stop_stack
from bench.supply import assignment, distribution, generation
from bench.throughput import throughput

SECTIONS = ("throughput", "hot", "shared", "events", "generation", "assignment", "distribution", "soak")

QUICK = {
    "runs": 1,
    "seconds": 2.0,
    "warmup": 0.5,
    "pgbench_seconds": 3,
    "generation_codes": 100_000,
    "generation_runs": 1,
    "assignment_sizes": (1_000, 100_000),
    "soak_seconds": 20.0,
}


async def main(args) -> int:
    started = time.monotonic()
    config = Config(profile=args.profile, **(QUICK if args.quick else {}))
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    # the client processes first: spawned before this process has any gRPC channel or thread
    generator = LoadGenerator(config.processes)
    print("Starting a fresh embedded PostgreSQL and the suite...", flush=True)
    stack = await start_stack()
    bench = None
    try:
        env = report.environment(stack)
        print(
            f"  {env['cores']} cores, Python {env['python']}, grpcio {env['grpcio']}, {env['postgres']}, "
            f"fsync={env['fsync']}, synchronous_commit={env['synchronous_commit']}; "
            f"components: {', '.join(c.name for c in stack.suite.components)}",
            flush=True,
        )
        for note in stack.notes:
            print(f"  note: {note}", flush=True)
        bench = Bench(stack, generator, config)
        big_books: list[str] = []
        sections = {
            "throughput": lambda: throughput(bench),
            "hot": lambda: hot_code(bench),
            "shared": lambda: shared_code(bench),
            "events": lambda: events(bench),
            "generation": lambda: generation(bench),
            "assignment": lambda: assignment(bench, big_books),
            "distribution": lambda: distribution(bench),
            "soak": lambda: soak(bench),
        }
        took = []
        for name, section in sections.items():
            if name in only:
                began = time.monotonic()
                made = await section()
                if name == "generation":
                    big_books = made
                took.append(f"{name} {time.monotonic() - began:.0f} s")
        bench.notes.append("wall time by section: " + ", ".join(took))
        bench.finish()
        wall = time.monotonic() - started
        path = report.write(bench, env, wall)
        print()
        print(report.terminal(bench))
        print(f"\nWritten to {path} (and latest.json); wall time {wall:.0f} s", flush=True)
        failed = bench.get("integrity")
        return 0 if failed is None or failed.met else 1
    finally:
        if bench is not None:
            await bench.close()
        generator.close()
        stop_stack(stack)


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main(args)))


if __name__ == "__main__":
    cli()
