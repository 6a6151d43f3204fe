"""Errors the daemon turns into exit codes and log lines."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (config, data file, arguments): exit code 2, one line per problem."""

    def __init__(self, lines: list[str] | str) -> None:
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("; ".join(self.lines))
