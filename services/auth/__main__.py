"""`python -m services.auth [serve|migrate]` (console script: coupons-auth)."""

from kernel import runner
from services.auth.app import build


def main() -> None:
    runner.main("auth", build)


if __name__ == "__main__":
    main()
