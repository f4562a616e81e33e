"""Print README.md's options table, generated from rsgi.config.

python scripts/gen_options.py           # print the table
python scripts/gen_options.py --write   # replace it in README.md
python scripts/gen_options.py --check   # exit 1 if README.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- options:start -->"
END = "<!-- options:end -->"

# Import the source tree's config, not an installed rsgi that may be older.
sys.path.insert(0, str(ROOT / "python"))
from rsgi.config import Setting, format_default, settings  # noqa: E402


def cell(text: str) -> str:
    # "<module>" would vanish into an HTML tag when GitHub renders the table.
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(raw, escaped)
    return text.replace("\n", " ")


def flag_cell(setting: Setting) -> str:
    opt = setting.option
    if not setting.flags and not opt.positional:
        text = "(`-c` file or `run()` only)"
    elif opt.choices:
        text = f"`{setting.cli_spelling}` " + " \\| ".join(f"`{c}`" for c in opt.choices)
    elif setting.is_bool or opt.positional:
        text = f"`{setting.cli_spelling}`"
    else:
        text = f"`{setting.cli_spelling} {opt.metavar or setting.name.upper()}`"
    if opt.aliases:
        text += "<br>also " + ", ".join(f"`{alias}`" for alias in opt.aliases)
    return text


def name_cell(setting: Setting) -> str:
    """The run() argument, and gunicorn's config-file names where they differ."""
    text = f"`{setting.name}`"
    others = [name for name in setting.option.gunicorn if name != setting.name]
    if others:
        text += "<br>gunicorn: " + ", ".join(f"`{name}`" for name in others)
    return text


def default_cell(setting: Setting) -> str:
    if setting.option.positional:
        return "required"
    if setting.default in (None, [], ""):
        return ""
    return f"`{format_default(setting.default)}`"


def row(setting: Setting) -> str:
    env = "<br>".join(f"`{name}`" for name in setting.env_names)
    cells = [flag_cell(setting), env, name_cell(setting), default_cell(setting)]
    return "| " + " | ".join([*cells, cell(setting.option.help)]) + " |"


def table() -> str:
    lines = [
        "| Option | Environment | `run()` argument / config file | Default | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [row(s) for s in settings()]
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{README.name}: markers {START} / {END} not found")
    return f"{head}{START}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    mode.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args(argv)
    if not (args.check or args.write):
        sys.stdout.write(table())
        return 0
    current = README.read_text(encoding="utf-8")
    wanted = replace_block(current, table())
    if args.write:
        README.write_text(wanted, encoding="utf-8")
        return 0
    if current != wanted:
        print("README.md options table is stale: run python scripts/gen_options.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
