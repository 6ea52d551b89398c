"""Read a document's root types as plain Python values, for JSON export.

A Yjs update does not record whether a root type is a Y.Text, a Y.Map or a
Y.Array; a client decides that when it first calls ``getText``, ``getMap``
or ``getArray``. The kind is therefore inferred from the content, reading
each root from a fresh copy of the document because a pycrdt root keeps the
first type it was read as: a root with keys is a map, a root whose text
view is not empty is a text, anything else is an array (possibly empty).
XML types read as text or array by the same rule.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Doc, Map, Text


def _fresh(state: bytes) -> Doc:
    doc = Doc()
    doc.apply_update(state)
    return doc


def document_to_python(state: bytes) -> dict[str, Any]:
    """Map each root type name of the document in ``state`` to its content.

    Texts become strings, maps dicts and arrays lists; nested shared types
    become nested values. Cost: one document copy per root and per kind
    tried, so this is meant for an API call, not for the update path.
    """
    roots = sorted(_fresh(state).keys())
    result: dict[str, Any] = {}
    for root in roots:
        as_map = _fresh(state).get(root, type=Map).to_py() or {}
        if as_map:
            result[root] = as_map
            continue
        as_text = str(_fresh(state).get(root, type=Text))
        if as_text:
            result[root] = as_text
            continue
        result[root] = _fresh(state).get(root, type=Array).to_py() or []
    return result
