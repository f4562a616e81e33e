"""The ``rsgi`` command line, generated from the options table in rsgi.config.

Where a setting comes from, lowest first: its default, a config file (``-c``, gunicorn's
Python format), the ``RSGI_*`` environment variables, the command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Mapping
from typing import Any

from rsgi.config import Config, ConfigError, Setting, env_values, format_default, settings


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: sys.argv[1:]) and serve. Exits 2 on bad options."""
    config, warnings = config_from_argv(argv)
    # Imported late so that `rsgi --help` works even without the Rust core built.
    from rsgi.main import run_config

    run_config(config, warnings)


def config_from_argv(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Config, list[str]]:
    """The Config the command line asks for, and warnings to log once logging is set up.

    Bad values end the process with argparse's usage error (exit code 2).
    """
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    config_file = given.pop("config_file", None)
    try:
        values: dict[str, Any] = {}
        warnings: list[str] = []
        if config_file is not None:
            from rsgi import configfile

            values, warnings = configfile.load(config_file)
        values.update(env_values(os.environ if environ is None else environ))
        values.update(given)
        if "app" not in values:
            parser.error("the following arguments are required: APP")
        return Config(**values), warnings
    except ConfigError as exc:
        parser.error(str(exc))


def version_line() -> str:
    from rsgi import __version__

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"rsgi {__version__} (Rust core, {python} on {platform.system()})"


class VersionAction(argparse.Action):
    """--version, computed only when asked for (it needs the Rust core)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs["default"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The rsgi command line. Only options actually given appear in the result."""
    parser = argparse.ArgumentParser(
        prog="rsgi",
        description="Serve an ASGI application with rsgi.",
        epilog="Every option can also be set with the environment variable shown; "
        "a command-line flag wins over the environment, which wins over a -c file.",
        argument_default=argparse.SUPPRESS,
        # "--time" must not silently mean --timeout-worker (nor be ambiguous).
        allow_abbrev=False,
    )
    parser.add_argument("--version", action=VersionAction, help="show the version and exit")
    parser.add_argument(
        "-c",
        "--config",
        dest="config_file",
        metavar="FILE",
        help="gunicorn-style Python config file (gunicorn.conf.py): its gunicorn settings "
        "(bind, workers, timeout, preload_app, max_requests, accesslog, hooks, ...) and "
        "rsgi's own setting names. Flags and RSGI_* variables win over it.",
    )
    groups: dict[str, Any] = {}
    for setting in settings():
        if not (setting.option.cli or setting.option.positional):
            continue
        if setting.option.group not in groups:
            groups[setting.option.group] = parser.add_argument_group(setting.option.group)
        add_argument(groups[setting.option.group], setting)
    return parser


def add_argument(group: Any, setting: Setting) -> None:
    opt = setting.option
    kwargs: dict[str, Any] = {"help": help_text(setting), "default": argparse.SUPPRESS}
    if opt.choices is not None:
        kwargs["choices"] = opt.choices
        kwargs["type"] = str.lower
    elif not setting.is_bool:
        kwargs["type"] = cli_type(opt.parse)
    if opt.metavar and not opt.positional:
        kwargs["metavar"] = opt.metavar
    if setting.is_bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif opt.repeat:
        kwargs["action"] = "append"
    if opt.positional:
        group.add_argument(setting.name, nargs="?", metavar=opt.metavar, **kwargs)
    else:
        group.add_argument(*setting.flags, *opt.aliases, dest=setting.name, **kwargs)


def cli_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            # ArgumentTypeError keeps our message instead of "invalid convert value".
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def help_text(setting: Setting) -> str:
    notes = []
    if setting.default not in (None, [], ""):
        notes.append(f"default: {format_default(setting.default)}")
    notes.append("env: " + " or ".join(setting.env_names))
    text = f"{setting.option.help} [{'; '.join(notes)}]"
    return text.replace("%", "%%")  # argparse %-formats help strings


if __name__ == "__main__":
    main(sys.argv[1:])
