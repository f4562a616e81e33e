"""``python -m rsgi``: the same as the ``rsgi`` command."""

from rsgi.cli import main

if __name__ == "__main__":
    main()
