"""Statements written with named roles (`:me`, `:now`), sent with positional parameters.

Every statement of the store names what each value is (`:job_id`, `:lease_ms`), so a role
never changes meaning between statements. Rows of a batch (`VALUES (?, ?), (?, ?)`) stay
anonymous `?`: their meaning is the column list right above them. The text sent is rewritten to
numbered `?N` parameters, which both transports bind the same way (Python's sqlite3 wants a
mapping for named parameters and Hrana a separate `named_args` list; numbered ones need
neither, and keep the wire format the conformance tests check).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from controller.store.schema import rename

# A role is `:name` outside string literals; the store's SQL has no literal holding a colon.
_TOKEN = re.compile(r"'[^']*'|\?|:([a-z_][a-z0-9_]*)")


class Stmt:
    """One statement: its text for the configured table, and the order its values go in."""

    __slots__ = ("_rows", "names", "sql")

    def __init__(self, sql: str, table: str = "audio_jobs") -> None:
        slots: list[str | None] = []  # None: the next anonymous row value
        numbers: dict[str, int] = {}

        def number(m: re.Match[str]) -> str:
            token = m.group(0)
            if token.startswith("'"):
                return token
            name = m.group(1)
            if name is None:
                slots.append(None)
                return f"?{len(slots)}"
            if name not in numbers:
                slots.append(name)
                numbers[name] = len(slots)
            return f"?{numbers[name]}"

        self.sql = rename(_TOKEN.sub(number, sql), table)
        self.names = frozenset(numbers)
        self._rows = slots

    def __repr__(self) -> str:
        return f"Stmt({self.sql!r})"

    def args(self, rows: Sequence[Any] = (), **roles: Any) -> list[Any]:
        """The values in parameter order: `rows` fill the anonymous `?` in turn, `roles` the
        named ones. A missing or unknown role is a bug in the caller, so it raises."""
        if set(roles) != self.names:
            missing = sorted(self.names - set(roles))
            extra = sorted(set(roles) - self.names)
            raise TypeError(f"statement roles: missing {missing}, unknown {extra}")
        places = self._rows.count(None)
        if len(rows) != places:
            raise TypeError(f"{len(rows)} row values for {places} places")
        it = iter(rows)
        return [next(it) if name is None else roles[name] for name in self._rows]
