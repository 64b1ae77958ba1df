"""`make bench` / `python -m bench`: the benchmarks of issue 7 on a fresh local stack.

Options: --quick (1 run each, shorter windows, smaller generation: a smoke test, not figures),
--only SECTION[,SECTION] (ceiling, redeem, hot, generation, assignment, distribution),
--profile (py-spy record of the redemption server during the first 32-caller gRPC redeem run).
"""

import argparse
import asyncio
import logging
import sys
import time

from bench import report
from bench.load import LoadGenerator
from bench.scenarios import Bench, Config
from bench.stack import start_stack, stop_stack

SECTIONS = ("ceiling", "redeem", "hot", "generation", "assignment", "distribution")


async def main(args) -> int:
    started = time.monotonic()
    config = Config(profile=args.profile)
    if args.quick:
        config = Config(
            runs=1,
            seconds=2.0,
            warmup=0.5,
            pgbench_seconds=3,
            generation_codes=100_000,
            assignment_sizes=(1_000, 100_000),
            profile=args.profile,
        )
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
        if "ceiling" in only:
            await bench.grpc_ceiling()
        if "redeem" in only:
            await bench.redeem()
        if "hot" in only:
            await bench.hot_code()
        big_books = await bench.generation() if "generation" in only else []
        if "assignment" in only:
            await bench.assignment(big_books)
        if "distribution" in only:
            await bench.distribution()
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
