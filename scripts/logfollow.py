"""``LogFollower``: print what supervisord's programs append to their log files (``api.log``, ``worker_00.log`` ...).

supervisord writes each program's output to its own file in ``FEEDPLANE_RUN_DIR`` (so ``supervisorctl tail -f
worker_00`` works); ``scripts/run`` keeps showing every process's lines in the foreground by polling those files with
this. Files present at start are followed from their end (an earlier run's lines are not repeated), new ones from
their beginning; a file that shrank was rotated (``stdout_logfile_maxbytes``) and is read again from its start.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

#: Most bytes read from one file per poll (a burst is printed over several polls instead of all at once).
CHUNK_BYTES = 1 << 20


class LogFollower:
    """Follows ``directory/*.log``; ``poll()`` copies complete new lines to ``out``."""

    def __init__(self, directory: Path, out: BinaryIO) -> None:
        self.directory = directory
        self.out = out
        self.offsets = {path: path.stat().st_size for path in directory.glob("*.log")}

    def poll(self) -> int:
        """Copy every complete line appended since the last call; returns the bytes written."""
        written = 0
        for path in sorted(self.directory.glob("*.log")):
            try:
                size = path.stat().st_size
                offset = self.offsets.get(path, 0)
                if size < offset:  # rotated: the file was renamed and a new one started
                    offset = 0
                if size == offset:
                    self.offsets[path] = offset
                    continue
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read(min(size - offset, CHUNK_BYTES))
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # whole lines only; the rest is read once complete
            if end:
                self.out.write(data[:end])
                written += end
            self.offsets[path] = offset + end
        if written:
            self.out.flush()
        return written
