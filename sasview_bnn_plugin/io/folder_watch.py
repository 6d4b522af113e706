"""Noticing new data files in a folder once they are completely written.

:class:`FolderWatcher` polls one folder (no extra dependency, works on every
platform and on network shares). A file is *ready* when it matches the
pattern, is not empty, and its size and modification time have not changed
for ``settle`` seconds: an instrument or a copy still writing it keeps
changing one of them. Empty files wait (many writers create the file first).
Each ready file is reported once; a file changed after it was reported is not
reported again. Hidden files (name starting with ".") and the files named in
``ignore`` (the results file and its sidecars) are never reported.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .loading import DATA_SUFFIXES


@dataclass
class _Candidate:
    """A file seen but not yet ready: its last (size, mtime) and when that was first seen."""

    size: int
    mtime_ns: int
    stable_since: float


class FolderWatcher:
    """Reports files of ``folder`` that are new and completely written.

    ``pattern`` is a glob on the file name ("*.xml"; default: every suffix
    sasdata reads). ``settle`` is in seconds. ``done`` names files (absolute
    paths) already handled, e.g. those in an existing results file. ``clock``
    returns seconds (monotonic). Paths reported are absolute.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        pattern: str | None = None,
        settle: float = 2.0,
        done: Iterable[str] = (),
        ignore: Iterable[str | os.PathLike[str]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settle < 0:
            raise ValueError("settle must be zero or more seconds")
        self.folder = Path(os.path.abspath(folder))
        self.pattern = pattern
        self.settle = float(settle)
        self._done: set[str] = set(done)
        self._ignore = {os.path.abspath(p) for p in ignore}
        self._candidates: dict[str, _Candidate] = {}
        self._clock = clock

    def matches(self, name: str) -> bool:
        """True when a file name is one this watcher looks at."""
        if name.startswith("."):
            return False
        if self.pattern is not None:
            return fnmatch.fnmatch(name, self.pattern)
        return Path(name).suffix.lower() in DATA_SUFFIXES

    def mark_done(self, path: str | os.PathLike[str]) -> None:
        """Never report ``path`` (again)."""
        key = os.path.abspath(path)
        self._done.add(key)
        self._candidates.pop(key, None)

    def is_done(self, path: str | os.PathLike[str]) -> bool:
        """True when ``path`` was reported or marked done."""
        return os.path.abspath(path) in self._done

    @property
    def n_waiting(self) -> int:
        """Files seen that are not ready yet (still changing, or empty)."""
        return len(self._candidates)

    def poll(self) -> list[Path]:
        """Files that are ready and not done, sorted by name.

        A file stays in the answer until :meth:`mark_done` is called for it,
        so a file whose rows were not written (the watch was stopped) comes
        back at the next poll.
        """
        now = self._clock()
        ready: list[Path] = []
        seen: set[str] = set()
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []  # the folder vanished or is unreadable for now; try again next poll
        for entry in entries:
            key = os.path.join(self.folder, entry.name)
            if key in self._done or key in self._ignore or not self.matches(entry.name):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError:
                continue  # removed meanwhile
            seen.add(key)
            known = self._candidates.get(key)
            if known is None or (known.size, known.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._candidates[key] = _Candidate(stat.st_size, stat.st_mtime_ns, now)
                if self.settle > 0 or stat.st_size == 0:
                    continue
                known = self._candidates[key]
            if stat.st_size > 0 and now - known.stable_since >= self.settle:
                ready.append(Path(key))
        for key in list(self._candidates):
            if key not in seen:
                del self._candidates[key]  # deleted before it was ready
        return sorted(ready)
