"""`python -m zenlm ...`: the same as the `zenlm` command."""

from zenlm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
