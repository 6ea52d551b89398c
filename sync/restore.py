"""Turn a document back into an older version by editing it forward.

Restoring never rewinds history: that would discard edits that clients
still hold and would send again. Instead the current document is edited,
in one transaction, until each root type has the old version's content, so
every connected client receives an ordinary update. Root kinds are
inferred as in ``sync.export``.

Limits: a text is replaced whole (its formatting attributes are not
restored), and nested shared types inside maps and arrays come back as
plain JSON values.
"""

from __future__ import annotations

from pycrdt import Array, Doc, Map, Text

from .export import document_to_python


def restore_into(doc: Doc, old_state: bytes) -> None:
    """Edit ``doc`` so that its root types hold what they held in ``old_state``.

    Roots that did not exist in the old version are emptied.
    """
    old = document_to_python(old_state)
    current = document_to_python(doc.get_update())
    with doc.transaction():
        for root, value in old.items():
            if isinstance(value, str):
                text = doc.get(root, type=Text)
                if str(text) != value:
                    del text[0 : len(text)]
                    text.insert(0, value)
            elif isinstance(value, dict):
                target = doc.get(root, type=Map)
                for key in [key for key in target.keys() if key not in value]:
                    del target[key]
                for key, item in value.items():
                    if target.get(key) != item:
                        target[key] = item
            else:
                array = doc.get(root, type=Array)
                if array.to_py() != value:
                    del array[0 : len(array)]
                    array.extend(value)
        for root, value in current.items():
            if root in old:
                continue
            if isinstance(value, str):
                text = doc.get(root, type=Text)
                del text[0 : len(text)]
            elif isinstance(value, dict):
                target = doc.get(root, type=Map)
                for key in list(target.keys()):
                    del target[key]
            else:
                array = doc.get(root, type=Array)
                del array[0 : len(array)]
