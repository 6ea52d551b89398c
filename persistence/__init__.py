"""Document storage behind one interface (``DocumentStore``)."""

from .store import DocumentStore, StoredDocument, StoreUnavailable, VersionInfo

__all__ = ["DocumentStore", "StoredDocument", "StoreUnavailable", "VersionInfo"]
