"""``python -m service`` is the same as the ``embedding-service`` console script."""

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
