"""The database's own ceiling for the statements the service runs: pgbench (a C client, so PostgreSQL
gets both cores) running one script per hot operation, each a copy of the service's one statement."""

import math
import re
import subprocess
import uuid
from pathlib import Path

from bench import checks
from bench.cpu import CpuShare
from bench.stack import pgbench_path

HERE = Path(__file__).resolve().parent
SCRIPTS = {"redeem": HERE / "pgbench_redeem.sql", "assign": HERE / "pgbench_assign.sql"}
CLIENTS = 32


def _redeem_book(bench, run: int, clients: int, per_client: int) -> tuple[str, dict[str, str]]:
    """A book made in SQL (pgbench needs numeric codes it can compute) whose codes one user holds, with
    the ASSIGNED history and holding the service would have written, so the same checks apply."""
    book_id, user = str(uuid.uuid4()), str(uuid.uuid4())
    base = 1_000_000_000 * (run + 1)
    db = bench.db
    with db.transaction():
        db.execute(
            """INSERT INTO redemption.book_rules (book_id, allow_multi_redemption, max_redemptions,
            max_assignments_per_user, lock_ttl_seconds, archived, version)
            VALUES (%s, false, 1, 0, 300, false, 1)""",
            (book_id,),
        )
        db.execute(
            """INSERT INTO redemption.coupons (code, book_id, state, user_id, assigned_at)
            SELECT (%(base)s::bigint + client * 10000000 + n)::text, %(b)s, 'ASSIGNED', %(u)s, now()
            FROM generate_series(0, %(clients)s - 1) client, generate_series(1, %(n)s) n""",
            {"base": base, "b": book_id, "u": user, "clients": clients, "n": per_client},
        )
        db.execute(
            """INSERT INTO redemption.history (code, book_id, event, user_id, actor_id)
            SELECT code, book_id, 'ASSIGNED_EVENT', user_id, 'bench' FROM redemption.coupons WHERE book_id = %s""",
            (book_id,),
        )
        db.execute(
            "INSERT INTO redemption.holdings (book_id, user_id, held) VALUES (%s, %s, %s)",
            (book_id, user, clients * per_client),
        )
    db.execute("ANALYZE redemption.coupons")
    return book_id, {"n": "0", "base": str(base), "actor": user}


async def run(bench, operation: str, run: int) -> float:
    """One pgbench run of `operation` (redeem or assign) at 32 clients; its tps, checked in the database."""
    config = bench.config
    # enough for ~8,000 operations/s, the fastest seen
    needed = max(2000 * CLIENTS, math.ceil(8000 * config.pgbench_seconds))
    if operation == "redeem":
        book_id, variables = _redeem_book(bench, run, CLIENTS, math.ceil(needed / CLIENTS))
    else:
        book_id = await bench.create_book("pgbench-assign", allow_self_claim=True)
        await bench.generate(book_id, needed)
        bench.db.execute("ANALYZE redemption.coupons")
        variables = {"book": book_id, "run": str(run + 1)}
    command = [str(pgbench_path()), "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", "2"]
    command += ["-T", str(config.pgbench_seconds), "-f", str(SCRIPTS[operation]), "-d", bench.stack.database_url]
    for name, value in variables.items():
        command += ["-D", f"{name}={value}"]
    cpu: list[CpuShare] = []
    with bench.meter.measure(cpu):
        done = subprocess.run(command, capture_output=True, text=True, cwd="/tmp", timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr[-2000:]}")
    tps = float(re.search(r"tps = ([0-9.]+)", done.stdout).group(1))
    processed = int(re.search(r"number of transactions actually processed: (\d+)", done.stdout).group(1))
    cpu[0].operations = processed
    bench.cpu.setdefault(f"pgbench_{operation}_{CLIENTS}", []).append(cpu[0])
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    latency = re.search(r"latency average = ([0-9.]+) ms", done.stdout)
    bench.details.setdefault("pgbench", []).append(
        {
            "operation": operation,
            "clients": CLIENTS,
            "tps": tps,
            "processed": processed,
            "failed": int(failed.group(1)) if failed else 0,
            "latency_avg_ms": float(latency.group(1)) if latency else None,
        }
    )
    if operation == "redeem":
        found = checks.check_book(bench.db, book_id, redemptions=processed)
    else:
        found = checks.check_book(bench.db, book_id, assignments=processed, skip=("redeemed_history_mismatch",))
    bench.record_check(f"pgbench {operation} run {run + 1}", found)
    print(
        f"  pgbench {operation}, {CLIENTS} clients, run {run + 1}: {tps:,.0f} tps ({processed:,} done, "
        f"avg {latency.group(1) if latency else '?'} ms)",
        flush=True,
    )
    return tps
