"""Print README.md's options table and docs/reference.md's server hooks table, generated
from rsgi.config. README.md gives the hooks one row, which links to the second table.

python scripts/gen_options.py           # print the tables
python scripts/gen_options.py --write   # replace them in README.md and docs/reference.md
python scripts/gen_options.py --check   # exit 1 if either is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference.md"

# Import the source tree's config, not an installed rsgi that may be older.
sys.path.insert(0, str(ROOT / "python"))
from rsgi.config import HOOKS_GROUP, Setting, format_default, settings  # noqa: E402


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


def hooks() -> list[Setting]:
    return [s for s in settings() if s.option.group == HOOKS_GROUP]


def table() -> str:
    lines = [
        "| Option | Environment | `run()` argument / config file | Default | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [row(s) for s in settings() if s.option.group != HOOKS_GROUP]
    names = ", ".join(f"`{s.name}`" for s in hooks())
    link = "[docs/reference.md](docs/reference.md#server-hooks)"
    lines.append(
        f"| (`-c` file or `run()` only) |  | {names} |  | gunicorn's server hooks: {link} |"
    )
    return "\n".join(lines) + "\n"


def hooks_table() -> str:
    lines = ["| Hook | When rsgi calls it |", "| --- | --- |"]
    for setting in hooks():
        signature, _, when = setting.option.help.partition(": ")
        lines.append(f"| `{signature}` | {cell(when)} |")
    return "\n".join(lines) + "\n"


#: Each generated block: its file, its markers' name and its text.
BLOCKS = ((README, "options", table), (REFERENCE, "hooks", hooks_table))


def replace_block(path: Path, name: str, text: str, block: str) -> str:
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    head, start, rest = text.partition(start_marker)
    _, end, tail = rest.partition(end_marker)
    if not start or not end:
        raise SystemExit(f"{path.name}: markers {start_marker} / {end_marker} not found")
    return f"{head}{start_marker}\n{block}{end_marker}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a table is stale")
    mode.add_argument("--write", action="store_true", help="update the tables in place")
    args = parser.parse_args(argv)
    stale = 0
    for path, name, make in BLOCKS:
        if not (args.check or args.write):
            sys.stdout.write(make() + "\n")
            continue
        current = path.read_text(encoding="utf-8")
        wanted = replace_block(path, name, current, make())
        if args.write:
            path.write_text(wanted, encoding="utf-8")
        elif current != wanted:
            print(
                f"{path.name}: the {name} table is stale: run python scripts/gen_options.py --write"
            )
            stale = 1
    return stale


if __name__ == "__main__":
    sys.exit(main())
