"""`python -m services.pools [serve|migrate]`."""

from kernel import runner
from services.pools.app import build


def main() -> None:
    runner.main("pools", build)


if __name__ == "__main__":
    main()
