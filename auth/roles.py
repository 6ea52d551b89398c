"""Roles per document, read from a token claim that maps name patterns to roles.

The claim (``yrelay_roles`` unless configured otherwise) is a JSON object::

    {"notes/alice/**": "editor", "handbook": "viewer", "team-*": "admin"}

A pattern is a document name in which ``*`` matches any run of characters
except ``/`` and ``**`` matches any run of characters including ``/``.
Every other character matches itself. When several patterns match a name,
the highest of their roles applies.
"""

from __future__ import annotations

import re
from enum import IntEnum


class Role(IntEnum):
    """Permission level on a document; a higher role includes the lower ones."""

    VIEWER = 1  # read the document and awareness, send awareness
    EDITOR = 2  # also write updates
    ADMIN = 3  # also delete the document and restore versions

    @classmethod
    def parse(cls, text: str) -> Role:
        """Return the role named ``text`` (viewer, editor or admin); raises ValueError otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(role.name.lower() for role in cls)
            raise ValueError(f"unknown role {text!r}: expected one of {names}") from None


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a document-name pattern into an anchored regular expression."""
    parts = re.split(r"(\*\*|\*)", pattern)
    translated = []
    for part in parts:
        if part == "**":
            translated.append(".*")
        elif part == "*":
            translated.append("[^/]*")
        else:
            translated.append(re.escape(part))
    return re.compile("".join(translated), re.DOTALL)


class RoleGrants:
    """The (pattern, role) pairs of one token."""

    def __init__(self, grants: list[tuple[str, Role]]) -> None:
        self.grants = grants
        self._compiled = [(compile_pattern(pattern), role) for pattern, role in grants]

    @classmethod
    def from_claim(cls, value: object) -> RoleGrants:
        """Read the roles claim; raises ValueError when it is not an object of pattern to role name."""
        if not isinstance(value, dict):
            raise ValueError("roles claim must be an object mapping document patterns to roles")
        grants = []
        for pattern, role in value.items():
            if not isinstance(pattern, str) or not pattern or not isinstance(role, str):
                raise ValueError("roles claim must map non-empty patterns to role names")
            grants.append((pattern, Role.parse(role)))
        return cls(grants)

    def role_for(self, document: str) -> Role | None:
        """Return the highest role any pattern grants on ``document``, or None."""
        best: Role | None = None
        for regex, role in self._compiled:
            if (best is None or role > best) and regex.fullmatch(document):
                best = role
        return best
