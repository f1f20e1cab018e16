"""Counting what the cluster's sshd saw: logins and refused channels, from its VERBOSE log."""

from __future__ import annotations

from pathlib import Path

import attrs


@attrs.frozen
class SshdLogMark:
    """A position in an sshd log; counts taken from a mark only see what happened after it."""

    path: Path
    offset: int

    @classmethod
    def now(cls, path: str | Path) -> SshdLogMark:
        """Mark the current end of the log at ``path``."""
        log = Path(path)
        return cls(log, log.stat().st_size if log.exists() else 0)

    def text(self) -> str:
        """What the log gained since the mark."""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def logins(self) -> int:
        """Successful logins (new SSH connections authenticated) since the mark."""
        return self.text().count("Accepted publickey")

    def refused_sessions(self) -> int:
        """Channels sshd refused because a connection hit MaxSessions."""
        return self.text().count("no more sessions")
