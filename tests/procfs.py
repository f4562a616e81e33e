"""What /proc says about the processes a test started."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (of any of its threads)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return {c for c in found if alive(c)}


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie; one that exits while we look is not alive."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
