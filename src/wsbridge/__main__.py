"""``python -m wsbridge``: the same command line as the ``wsbridge`` script."""

from wsbridge.cli import main

if __name__ == "__main__":
    main()
