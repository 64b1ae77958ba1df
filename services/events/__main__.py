"""`python -m services.events [serve|migrate]`."""

from kernel import runner
from services.events.app import build


def main() -> None:
    runner.main("events", build)


if __name__ == "__main__":
    main()
