"""Where a run directory keeps its checkpoints and weights versions, readable without torch (the launcher lists
them; `learner.checkpoint` writes them and documents the layout)."""

from __future__ import annotations

import re
from pathlib import Path

_STEP_DIR = re.compile(r"^step_(\d+)$")
_VERSION_DIR = re.compile(r"^v(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def _numbered_dirs(root: Path, pattern: re.Pattern[str], marker: str | None = None) -> list[tuple[int, Path]]:
    """(number, folder) of the folders under `root` whose name `pattern` matches (and that hold the file `marker`,
    when given), lowest number first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = pattern.match(p.name)
        if m and p.is_dir() and (marker is None or (p / marker).is_file()):
            found.append((int(m.group(1)), p))
    return sorted(found)


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` (those with `trainer.pt`, written last), oldest first."""
    return _numbered_dirs(root, _STEP_DIR, "trainer.pt")


def latest_checkpoint(root: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def list_versions(root: Path) -> list[tuple[int, Path]]:
    """Published weights versions under `root` (`v<N>/`), oldest first."""
    return _numbered_dirs(root, _VERSION_DIR)
