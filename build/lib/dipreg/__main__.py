"""``python -m dipreg``: the command line (see :mod:`dipreg.cli`)."""

from dipreg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
