"""Document names taken from the URL path."""

from __future__ import annotations

import pytest

from relay.names import MAX_NAME_BYTES, InvalidDocumentName, document_name_from_path


@pytest.mark.parametrize("path", ["/notes", "/team/notes", "/é/日本", "/a.b/c-d_e", "/" + "n" * MAX_NAME_BYTES])
def test_valid_names(path: str) -> None:
    assert document_name_from_path(path) == path[1:]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/", "empty"),
        ("/" + "n" * (MAX_NAME_BYTES + 1), "longer than"),
        ("/" + "é" * (MAX_NAME_BYTES // 2 + 1), "longer than"),
        ("/a\x00b", "control characters"),
        ("/a\nb", "control characters"),
        ("/a\\b", "backslash"),
        ("/team/../secrets", "segment"),
        ("/team/./notes", "segment"),
        ("/team//notes", "segment"),
        ("/notes/", "segment"),
    ],
)
def test_invalid_names(path: str, message: str) -> None:
    with pytest.raises(InvalidDocumentName, match=message):
        document_name_from_path(path)
