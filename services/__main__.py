"""`python -m services [all | auth,books,...] [serve|migrate]`: several services in one process.

For development, like Loki's -target=all: one event loop, one gRPC server per service on its own
port, the same code and configuration as when each runs alone (`python -m services.<name>`).
"""

import importlib
import sys

from kernel import runner
from kernel.components import SERVICES


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else "all"
    command = args[1] if len(args) > 1 else "serve"
    names = list(SERVICES) if target == "all" else [n.strip() for n in target.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVICES] + ([] if command in ("serve", "migrate") else [command])
    if unknown or not names:
        raise SystemExit(
            f"usage: python -m services [all | {','.join(SERVICES)}] [serve|migrate] (unknown: {', '.join(unknown)})"
        )
    builders = {name: importlib.import_module(f"services.{name}.app").build for name in names}
    runner.run_components(names, builders, migrate_only=command == "migrate")


if __name__ == "__main__":
    main()
