"""`python -m service.cli` is the `streambalance` command."""

from service.cli.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
