"""`python -m services.redemption [serve|migrate]` (console script: coupons-redemption)."""

from kernel import runner
from services.redemption.app import build


def main() -> None:
    runner.main("redemption", build)


if __name__ == "__main__":
    main()
