"""Document-name patterns and the roles claim."""

from __future__ import annotations

import pytest

from auth import Role, RoleGrants


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("notes", "notes", True),
        ("notes", "notes/a", False),
        ("team-*", "team-red", True),
        ("team-*", "team-red/board", False),
        ("team/*", "team/a", True),
        ("team/*", "team/a/b", False),
        ("team/**", "team/a/b", True),
        ("**", "anything/at/all", True),
        ("a.b", "axb", False),
        ("a+b", "a+b", True),
    ],
)
def test_pattern_matching(pattern: str, name: str, matches: bool) -> None:
    grants = RoleGrants([(pattern, Role.EDITOR)])
    assert (grants.role_for(name) is not None) is matches


def test_highest_matching_role_wins() -> None:
    grants = RoleGrants.from_claim({"team/**": "viewer", "team/board": "admin", "other": "editor"})
    assert grants.role_for("team/board") is Role.ADMIN
    assert grants.role_for("team/notes") is Role.VIEWER
    assert grants.role_for("elsewhere") is None


@pytest.mark.parametrize("claim", [None, "editor", ["team/*"], {"team/*": "owner"}, {"": "editor"}, {"a": 3}])
def test_invalid_roles_claim(claim: object) -> None:
    with pytest.raises(ValueError):
        RoleGrants.from_claim(claim)
