"""`python -m shared.cli`: the `handoff` command."""

from shared.cli import main

if __name__ == "__main__":
    main()
