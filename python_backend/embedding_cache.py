"""Server-side cache of encoded images for interactive prompting, bounded in bytes.

Each encoded image gets a fresh, unguessable id (128 random bits): a client can only reach
embeddings it created (or was given the id of). When adding an entry would exceed
`max_bytes`, the least recently used entries are evicted first.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from typing import Generic, Protocol, TypeVar

from sam2_triton.python_backend.errors import InputError

ID_BYTES = 16


class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


Entry = TypeVar("Entry", bound=Sized)


class EmbeddingCache(Generic[Entry]):
    """LRU map image id -> encoded image, holding at most `max_bytes` (sum of `entry.nbytes`)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0  # counts for the metrics (python_backend/metrics.py)
        self.hits = 0
        self.misses = 0

    def add(self, entry: Entry) -> str:
        """Store `entry` under a new id and return the id."""
        size = int(entry.nbytes)
        if size > self.max_bytes:
            raise InputError(
                f"the encoded image needs {size} bytes, more than the whole embedding cache "
                f"({self.max_bytes} bytes)"
            )
        image_id = secrets.token_hex(ID_BYTES)
        with self._lock:
            while self._bytes + size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= int(evicted.nbytes)
                self.evictions += 1
            self._entries[image_id] = entry
            self._bytes += size
        return image_id

    def get(self, image_id: str) -> Entry:
        """The entry for `image_id` (now most recently used); InputError if unknown."""
        with self._lock:
            entry = self._entries.get(image_id)
            if entry is None:
                self.misses += 1
                raise InputError(
                    f"unknown IMAGE_ID {image_id[:64]!r}: never issued, released, or evicted "
                    f"from the embedding cache; send the IMAGE again"
                )
            self.hits += 1
            self._entries.move_to_end(image_id)
            return entry

    def release(self, image_id: str) -> Entry | None:
        """Drop `image_id`; returns the entry, or None if it was not cached."""
        with self._lock:
            entry = self._entries.pop(image_id, None)
            if entry is not None:
                self._bytes -= int(entry.nbytes)
            return entry

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._entries
