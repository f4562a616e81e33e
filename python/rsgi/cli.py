"""The ``rsgi`` command."""

from __future__ import annotations

from rsgi.config import Config


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: sys.argv[1:]) and serve. Exits 2 on bad options."""
    config = Config.from_argv(argv)
    # Imported late so that `rsgi --help` works even without the Rust core built.
    from rsgi.main import run_config

    run_config(config)
