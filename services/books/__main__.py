"""`python -m services.books [serve|migrate]`."""

from kernel import runner
from services.books.app import build


def main() -> None:
    runner.main("books", build)


if __name__ == "__main__":
    main()
