"""The Images operations, each answering one route of the main or batch API.

Handlers take a parsed request and return the ``result`` of the success envelope,
or raise ``ApiError``; authentication, rate limits and faults are applied before
them by the application.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any
from urllib.parse import quote

from starlette.requests import Request

from migrator.emulator import forms, imaging
from migrator.emulator.envelope import ApiError, bad_request, not_found
from migrator.emulator.fetcher import Fetcher
from migrator.emulator.settings import Settings
from migrator.emulator.state import Image, ImageStore
from migrator.emulator.stats import Stats
from migrator.emulator.tokens import Tokens, expires_at

logger = logging.getLogger(__name__)

_STATUS_OF_CODE = {5400: 400, 5413: 413, 5455: 415}


def duplicate(image_id: str) -> ApiError:
    """Refuse an ID that exists: code 5409, HTTP 409; uploads never overwrite."""
    return ApiError(409, 5409, f"Resource already exists: {image_id}")


class ImagesApi:
    """The account's Images API: the handlers and the state they share."""

    def __init__(
        self,
        settings: Settings,
        images: ImageStore,
        tokens: Tokens,
        stats: Stats,
        fetcher: Fetcher,
    ) -> None:
        self.settings = settings
        self.images = images
        self.tokens = tokens
        self.stats = stats
        self.fetcher = fetcher

    def describe(self, image: Image) -> dict[str, Any]:
        return image.describe(self.settings.account_hash, self.settings.variants)

    async def batch_token(self, request: Request) -> dict[str, Any]:
        token, expiry = self.tokens.issue()
        self.stats.batch_tokens_issued += 1
        return {"token": token, "expiresAt": expires_at(expiry)}

    async def usage_stats(self, request: Request) -> dict[str, Any]:
        return {
            "count": {"allowed": self.settings.quota, "current": self.images.count()}
        }

    async def upload(self, request: Request) -> dict[str, Any]:
        """Store an image sent as a ``file`` part or fetched from ``url``."""
        self.stats.uploads_attempted += 1
        form = await forms.read_form(request)
        options = forms.read_options(form)
        url = forms.text_field(form, "url")
        part = forms.file_field(form)
        if (url is None) == (part is None):
            raise bad_request("send exactly one of file and url")
        self._check_room(options.custom_id)

        if part is not None:
            data, filename = _read_part(part)
        else:
            assert url is not None
            data, filename = await self.fetcher.fetch(url)
        picture = _inspect(data)

        image = Image(
            id=options.custom_id or str(uuid.uuid4()),
            filename=filename,
            uploaded=time.time(),
            require_signed_urls=options.require_signed_urls,
            meta=options.metadata,
            creator=options.creator,
            format=picture.format,
            size=len(data),
        )
        self._store(image)
        return self.describe(image)

    async def details(self, request: Request, image_id: str) -> dict[str, Any]:
        return self.describe(self._find(image_id))

    async def update(self, request: Request, image_id: str) -> dict[str, Any]:
        image = self._find(image_id)
        custom_id = None if _is_assigned(image.id) else image.id
        changes = forms.read_changes(await request.body(), custom_id)
        self.images.change(image, changes)
        return self.describe(image)

    async def delete(self, request: Request, image_id: str) -> dict[str, Any]:
        if not self.images.delete(image_id):
            raise not_found(image_id)
        return {}

    async def list_v2(self, request: Request) -> dict[str, Any]:
        query = forms.read_list_query(request.query_params)
        found, position = self.images.page(
            descending=query.descending,
            after=query.after,
            limit=query.per_page,
            creator=query.creator,
            filters=query.filters,
        )
        order = "desc" if query.descending else "asc"
        return {
            "images": [self.describe(image) for image in found],
            "continuation_token": forms.encode_continuation(position, order),
        }

    async def list_v1(self, request: Request) -> dict[str, Any]:
        """List one page of images, newest first (the deprecated v1 listing)."""
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError as error:
            raise bad_request("page must be a number") from error
        per_page = forms.read_per_page(request.query_params.get("per_page"))
        found = self.images.slice((page - 1) * per_page, per_page)
        return {"images": [self.describe(image) for image in found]}

    async def direct_upload(self, request: Request) -> dict[str, Any]:
        """Reserve an ID as a draft and answer the URL its file goes to."""
        form = await forms.read_form(request)
        if not form:
            raise bad_request("a direct upload needs at least one form field")
        options = forms.read_options(form)
        now = time.time()
        expiry = forms.read_expiry(forms.text_field(form, "expiry"), now)
        self._check_room(options.custom_id)

        draft = Image(
            id=options.custom_id or str(uuid.uuid4()),
            filename="",
            uploaded=now,
            require_signed_urls=options.require_signed_urls,
            meta=options.metadata,
            creator=options.creator,
            draft=True,
            expiry=expiry,
        )
        if not self.images.add(draft):
            raise duplicate(draft.id)
        path = f"upload/{self.settings.account_hash}/{quote(draft.id, safe='')}"
        return {"id": draft.id, "uploadURL": f"{request.base_url}{path}"}

    async def receive_direct(
        self, request: Request, account_hash: str, image_id: str
    ) -> dict[str, Any]:
        """Take the file of a direct upload, sent with no authentication."""
        self.stats.uploads_attempted += 1
        draft = self.images.get(image_id)
        if account_hash != self.settings.account_hash or draft is None:
            raise not_found(image_id)
        if not draft.draft:
            raise duplicate(image_id)
        part = forms.file_field(await forms.read_form(request))
        if part is None:
            raise bad_request("a direct upload needs a file part")
        data, filename = _read_part(part)
        picture = _inspect(data)

        image = self.images.complete(draft, filename, picture.format, len(data))
        self.stats.uploads_stored += 1
        return self.describe(image)

    def _find(self, image_id: str) -> Image:
        image = self.images.get(image_id)
        if image is None:
            raise not_found(image_id)
        return image

    def _check_room(self, custom_id: str | None) -> None:
        # Checked before the bytes are fetched, to spare the origin; checked again
        # when storing, since another upload may take the ID meanwhile.
        if custom_id is not None and self.images.get(custom_id) is not None:
            self.stats.duplicates_refused += 1
            raise duplicate(custom_id)
        if self.images.count() >= self.settings.quota:
            raise ApiError(403, 5453, "Account reached its Images storage limit")

    def _store(self, image: Image) -> None:
        if not self.images.add(image):
            self.stats.duplicates_refused += 1
            raise duplicate(image.id)
        self.stats.uploads_stored += 1
        logger.debug(
            "image %s stored (%s, %s bytes)", image.id, image.format, image.size
        )


def _is_assigned(image_id: str) -> bool:
    """Say whether an ID was assigned by the emulator (a UUID), not chosen."""
    try:
        uuid.UUID(image_id)
    except ValueError:
        return False
    return True


def _read_part(part: forms.FilePart) -> tuple[bytes, str]:
    content_type = part.content_type.split(";")[0].strip().lower()
    if content_type not in imaging.CONTENT_TYPES:
        raise ApiError(
            415,
            5455,
            f"Unsupported image format: the file part's content type is "
            f"{content_type or 'missing'}, not an image type Images accepts",
        )
    return part.data, (part.filename or "image")[-255:]


def _inspect(data: bytes) -> imaging.Picture:
    try:
        return imaging.inspect(data)
    except imaging.ImageRejected as rejected:
        status = _STATUS_OF_CODE.get(rejected.code, 400)
        raise ApiError(status, rejected.code, str(rejected)) from rejected
