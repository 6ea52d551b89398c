"""Document names: the URL path of the y-websocket convention, checked."""

from __future__ import annotations

MAX_NAME_BYTES = 1024


class InvalidDocumentName(ValueError):
    """A document name that yrelay does not serve; the message says why."""


def document_name_from_path(path: str) -> str:
    """Return the document name for an ASGI ``path`` (already percent-decoded).

    The name is everything after the leading slash and may contain ``/``.
    Raises ``InvalidDocumentName`` for an empty name, one longer than
    ``MAX_NAME_BYTES`` bytes of UTF-8, one with control characters or a
    backslash, or one with an empty, ``.`` or ``..`` segment. Backslashes
    and those segments would make names that look different refer to one
    file or key in some backends, and slip past role patterns.
    """
    name = path[1:] if path.startswith("/") else path
    if not name:
        raise InvalidDocumentName("document name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidDocumentName(f"document name is longer than {MAX_NAME_BYTES} bytes")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise InvalidDocumentName("document name contains control characters")
    if "\\" in name:
        raise InvalidDocumentName("document name contains a backslash")
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        raise InvalidDocumentName("document name has an empty, '.' or '..' segment")
    return name
