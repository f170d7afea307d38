"""The images an emulator holds: in memory, optionally journalled to SQLite.

Every read is served from memory. With a data file, each change is also written
through to SQLite at once, and the file is read back at start, so images (and the
batch-token signing key) survive a restart. All access happens on the server's
event loop thread, so no lock is needed.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

logger = logging.getLogger(__name__)


def rfc3339(epoch: float) -> str:
    """Format a time the way Cloudflare's ``uploaded`` field does, in milliseconds."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass
class Image:
    """One image, or a draft: a direct-upload ID still waiting for its file."""

    id: str
    filename: str
    uploaded: float
    require_signed_urls: bool
    meta: dict[str, Any]
    creator: str | None
    draft: bool = False
    expiry: float | None = None
    """Drafts only: when the direct-upload URL stops accepting the file."""
    format: str | None = None
    size: int = 0
    seq: int = 0
    """Position in upload order, which list v2 sorts by."""

    def describe(self, account_hash: str, variants: tuple[str, ...]) -> dict[str, Any]:
        """Return the image as the API's result object (reference section 3)."""
        path = quote(self.id, safe="/")
        body: dict[str, Any] = {
            "id": self.id,
            "filename": self.filename,
            "uploaded": rfc3339(self.uploaded),
            "requireSignedURLs": self.require_signed_urls,
            "variants": [
                f"https://imagedelivery.net/{account_hash}/{path}/{variant}"
                for variant in variants
            ],
            "meta": self.meta,
            "creator": self.creator,
        }
        if self.draft:
            del body["filename"]
            body["draft"] = True
        return body


class Journal:
    """Write-through copy of the images in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, body TEXT)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS setting (name TEXT PRIMARY KEY, value TEXT)"
        )

    def images(self) -> Iterator[Image]:
        """Yield every saved image, in upload order."""
        rows = self._db.execute("SELECT body FROM images")
        loaded = [Image(**json.loads(body)) for (body,) in rows]
        yield from sorted(loaded, key=lambda image: image.seq)

    def save(self, image: Image) -> None:
        body = json.dumps(dataclasses.asdict(image), ensure_ascii=False)
        self._db.execute(
            "INSERT OR REPLACE INTO images (id, body) VALUES (?, ?)", (image.id, body)
        )

    def remove(self, image_id: str) -> None:
        self._db.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def clear(self) -> None:
        self._db.execute("DELETE FROM images")

    def setting(self, name: str, default: str) -> str:
        """Return a saved setting, saving ``default`` first if there is none."""
        self._db.execute(
            "INSERT OR IGNORE INTO setting (name, value) VALUES (?, ?)", (name, default)
        )
        row = self._db.execute("SELECT value FROM setting WHERE name = ?", (name,))
        return str(row.fetchone()[0])

    def close(self) -> None:
        self._db.close()


@dataclasses.dataclass(frozen=True)
class MetaFilter:
    """One ``meta.<field>[<operator>]=<value>`` condition of list v2.

    Operators are ``eq`` and ``in`` (values separated by ``|``), which may be
    typed as ``:string``, ``:number`` or ``:boolean``, and ``gt``, ``gte``,
    ``lt``, ``lte``, which compare numbers only, as the 2026 SDK documents them.
    An untyped ``eq`` compares with the stored value's own type.
    """

    path: tuple[str, ...]
    operator: str
    kind: str | None
    value: str

    @property
    def indexable(self) -> bool:
        """Say whether ``MetaIndex`` can narrow the images this filter matches."""
        return self.operator == "eq" and len(self.path) == 1

    def matches(self, meta: dict[str, Any]) -> bool:
        found: Any = meta
        for key in self.path:
            if not isinstance(found, dict) or key not in found:
                return False
            found = found[key]
        if self.operator == "in":
            return any(self._equal(found, item) for item in self.value.split("|"))
        if self.operator == "eq":
            return self._equal(found, self.value)
        return _compare(found, self.value, self.operator)

    def _equal(self, found: Any, text: str) -> bool:
        kind = self.kind or _kind_of(found)
        if kind == "boolean":
            return isinstance(found, bool) and text.lower() == str(found).lower()
        if kind == "number":
            number = _number(found)
            return number is not None and number == _parse_number(text)
        return isinstance(found, str) and found == text


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "string"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _parse_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compare(found: Any, text: str, operator: str) -> bool:
    left, right = _number(found), _parse_number(text)
    if left is None or right is None:
        return False
    if operator == "gt":
        return left > right
    if operator == "gte":
        return left >= right
    if operator == "lt":
        return left < right
    return left <= right


def _index_key(value: Any) -> str | None:
    """Return the text a metadata value is indexed under (None: not indexed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value))
    return value if isinstance(value, str) else None


class MetaIndex:
    """Image IDs by the value of a top-level metadata field.

    A field's index is built on the first ``eq`` filter naming it, then kept up to
    date: the runner finds an in-doubt upload by ``meta.migrator_key[eq]``, which
    would otherwise scan every image of a large store per lookup. Lookups return
    a superset of the matches; the filter itself decides.
    """

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, set[str]]] = {}

    def lookup(self, images: dict[str, Image], field: str, text: str) -> set[str]:
        index = self._fields.get(field)
        if index is None:
            index = self._fields[field] = {}
            for image in images.values():
                self._file(index, field, image)
        keys = {text, text.lower()}
        number = _parse_number(text)
        if number is not None:
            keys.add(repr(number))
        return set().union(*(index.get(key, set()) for key in keys))

    def add(self, image: Image) -> None:
        for field, index in self._fields.items():
            self._file(index, field, image)

    def remove(self, image: Image) -> None:
        for field, index in self._fields.items():
            key = _index_key(image.meta.get(field))
            if key is not None:
                index.get(key, set()).discard(image.id)

    def clear(self) -> None:
        self._fields.clear()

    @staticmethod
    def _file(index: dict[str, set[str]], field: str, image: Image) -> None:
        key = _index_key(image.meta.get(field))
        if key is not None:
            index.setdefault(key, set()).add(image.id)


class ImageStore:
    """The account's images and drafts, keyed by ID, kept in upload order."""

    def __init__(self, journal: Journal | None = None) -> None:
        self._journal = journal
        self._images: dict[str, Image] = {}
        self._order: list[Image] = []
        self._stale = 0
        self._seq = 0
        self._index = MetaIndex()
        if journal is not None:
            for image in journal.images():
                self._images[image.id] = image
                if not image.draft:
                    self._order.append(image)
                self._seq = max(self._seq, image.seq)

    def get(self, image_id: str) -> Image | None:
        """Return the image or draft with this ID; a draft past its expiry is gone."""
        image = self._images.get(image_id)
        if image is not None and image.draft and (image.expiry or 0) < time.time():
            self.delete(image_id)
            return None
        return image

    def add(self, image: Image) -> bool:
        """Store a new image or draft; return False if the ID is taken."""
        if self.get(image.id) is not None:
            return False
        self._images[image.id] = image
        self._index.add(image)
        if not image.draft:
            self._append(image)
        self.save(image)
        return True

    def change(self, image: Image, changes: dict[str, Any]) -> None:
        """Set some of an image's fields (``meta``, ``require_signed_urls``,
        ``creator``) and save it."""
        self._index.remove(image)
        for name, value in changes.items():
            setattr(image, name, value)
        self._index.add(image)
        self.save(image)

    def complete(self, draft: Image, filename: str, fmt: str, size: int) -> Image:
        """Turn a draft into a stored image once its file has arrived."""
        draft.draft = False
        draft.expiry = None
        draft.filename = filename
        draft.format = fmt
        draft.size = size
        draft.uploaded = time.time()
        self._append(draft)
        self.save(draft)
        return draft

    def save(self, image: Image) -> None:
        """Write a changed image through to the journal, if there is one."""
        if self._journal is not None:
            self._journal.save(image)

    def delete(self, image_id: str) -> bool:
        """Remove an image or draft; return False if there was none."""
        image = self._images.pop(image_id, None)
        if image is None:
            return False
        self._index.remove(image)
        if not image.draft:
            self._stale += 1
            if self._stale > len(self._images):
                self._compact()
        if self._journal is not None:
            self._journal.remove(image_id)
        return True

    def clear(self) -> None:
        self._images.clear()
        self._index.clear()
        self._order.clear()
        self._stale = 0
        if self._journal is not None:
            self._journal.clear()

    def count(self) -> int:
        """Count stored images, drafts excluded (what usage statistics report)."""
        return len(self._order) - self._stale

    def page(
        self,
        *,
        descending: bool,
        after: int | None,
        limit: int,
        creator: str | None,
        filters: list[MetaFilter],
    ) -> tuple[list[Image], int | None]:
        """Return up to ``limit`` listed images past position ``after``, and the
        position to continue from (None when nothing is left)."""
        found: list[Image] = []
        for image in self._candidates(descending, after, filters):
            if creator is not None and (image.creator or "") != creator:
                continue
            if not all(condition.matches(image.meta) for condition in filters):
                continue
            if len(found) == limit:
                return found, found[-1].seq
            found.append(image)
        return found, None

    def slice(self, offset: int, count: int) -> list[Image]:
        """Return ``count`` listed images from ``offset``, newest first."""
        return list(itertools.islice(self._walk(True, None), offset, offset + count))

    def _candidates(
        self, descending: bool, after: int | None, filters: list[MetaFilter]
    ) -> Iterable[Image]:
        """Walk the listed images in order, or only those an index points to."""
        for condition in filters:
            if not condition.indexable:
                continue
            ids = self._index.lookup(self._images, condition.path[0], condition.value)
            chosen = [
                image
                for image in map(self._images.get, ids)
                if image is not None and not image.draft
            ]
            if after is not None:
                chosen = [
                    image
                    for image in chosen
                    if (image.seq < after if descending else image.seq > after)
                ]
            return sorted(chosen, key=lambda image: image.seq, reverse=descending)
        return self._walk(descending, after)

    def _walk(self, descending: bool, after: int | None) -> Iterator[Image]:
        order = self._order
        if descending:
            start = len(order) if after is None else self._position(after)
            candidates: Iterator[Image] = (order[i] for i in range(start - 1, -1, -1))
        else:
            start = 0 if after is None else self._position(after + 1)
            candidates = (order[i] for i in range(start, len(order)))
        for image in candidates:
            if self._images.get(image.id) is image:
                yield image

    def _position(self, seq: int) -> int:
        return bisect.bisect_left(self._order, seq, key=lambda image: image.seq)

    def _append(self, image: Image) -> None:
        self._seq += 1
        image.seq = self._seq
        self._order.append(image)

    def _compact(self) -> None:
        self._order = [i for i in self._order if self._images.get(i.id) is i]
        self._stale = 0
