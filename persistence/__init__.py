"""Document storage behind one interface (``DocumentStore``)."""

from .store import DocumentStore, StoredDocument, StoreUnavailable

__all__ = ["DocumentStore", "StoredDocument", "StoreUnavailable"]
