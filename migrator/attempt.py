"""One attempt at one claimed row: settle it, upload or update it, judge the result.

This is all a worker thread does. It speaks to Cloudflare through the client and
never touches the job table: it turns whatever happened into an outcome (done,
failed, retry later, or released untouched) that the bookkeeper records.

An attempt whose earlier try may have reached Cloudflare (the row is in doubt)
first looks for the image that try may have created, by custom ID or by the
migration key carried in its metadata, so that a row never ends with two images.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from typing import TYPE_CHECKING

from migrator.client import (
    FilePart,
    ImageFields,
    ImageRecord,
    ImagesClient,
    shown_source,
)
from migrator.errors import (
    AccountStoppedError,
    AlreadyExistsError,
    ApiError,
    AuthError,
    MigratorError,
    NotFoundError,
    PermanentApiError,
    RateLimitedError,
    SourceError,
    TransientApiError,
    TransportError,
)
from migrator.manifest import MIGRATION_KEY_FIELD, migration_key, upload_metadata
from migrator.store import (
    Action,
    Claim,
    Completed,
    Failed,
    Outcome,
    Released,
    Retried,
    utcnow,
)

if TYPE_CHECKING:
    from migrator.runner import RunSettings

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    """What one attempt at a claim came to, for the bookkeeper."""

    outcome: Outcome
    kind: str
    """done, updated, failed, retried or released."""
    error_code: str | None = None
    fatal: MigratorError | None = None
    """An error that must stop the whole run (auth, quota)."""
    healthy: bool | None = None
    """Whether the attempt counts as a success for the breaker; None: not counted."""


class Attempts:
    """Make attempts at claims with ``client``, as ``settings`` says; thread-safe."""

    def __init__(self, client: ImagesClient, settings: RunSettings) -> None:
        self.client = client
        self.settings = settings

    def make(self, claim: Claim) -> AttemptResult:
        """Make one attempt at a claim and say how it went; never raises."""
        try:
            record, kind = self._settle_or_send(claim)
        except (AuthError, AccountStoppedError) as error:
            # Nothing was done with the request: the row waits for the next run.
            return AttemptResult(
                Released(claim.row_id, claim.attempt, claim.owner),
                "released",
                error.code,
                fatal=error,
            )
        except (ApiError, TransportError, SourceError) as error:
            return self._failure(claim, error)
        except Exception as error:
            logger.exception("image %s: unexpected error", shown_source(claim.source))
            return self._retry(claim, "internal-error", str(error), None, True, None)

        level = logging.INFO if self.settings.log_outcomes else logging.DEBUG
        logger.log(
            level, "image %s: %s as %s", shown_source(claim.source), kind, record.id
        )
        completed = Completed(
            claim.row_id,
            claim.attempt,
            claim.owner,
            record.id,
            record.variants,
            record.uploaded_at,
        )
        return AttemptResult(completed, kind, healthy=True)

    def _settle_or_send(self, claim: Claim) -> tuple[ImageRecord, str]:
        fields = ImageFields(
            custom_id=claim.custom_id,
            metadata=upload_metadata(claim),
            require_signed_urls=claim.require_signed_urls,
            creator=claim.creator,
        )
        if claim.action is Action.UPDATE and claim.image_id:
            return self.client.update(claim.image_id, fields), "updated"

        if claim.in_doubt:
            found = self._find_earlier_upload(claim)
            if found is not None:
                return found, "done"
        try:
            return self._upload(claim, fields), "done"
        except AlreadyExistsError:
            if claim.custom_id is None:
                raise
            # Uploads never overwrite (reference §3): the image under this ID is
            # there already, from an earlier attempt or an earlier migration.
            return self.client.details(claim.custom_id), "done"

    def _find_earlier_upload(self, claim: Claim) -> ImageRecord | None:
        """The image an earlier attempt at ``claim`` stored, if it stored one."""
        if claim.custom_id is not None:
            try:
                return self.client.details(claim.custom_id)
            except NotFoundError:
                return None
        found = self.client.find(MIGRATION_KEY_FIELD, migration_key(claim.key))
        if len(found) > 1:
            logger.warning(
                "image %s: %d images carry its migration key; keeping the oldest, %s",
                shown_source(claim.source),
                len(found),
                found[0].id,
            )
        return found[0] if found else None

    def _upload(self, claim: Claim, fields: ImageFields) -> ImageRecord:
        if claim.source_kind == "file":
            part = FilePart.open(claim.source)
            try:
                return self.client.upload_file(part, fields)
            finally:
                part.stream.close()
        if self.settings.fetch_local:
            content = self.client.download(claim.source)
            part = FilePart.from_bytes(content, claim.source)
            return self.client.upload_file(part, fields)
        return self.client.upload_url(claim.source, fields)

    def _failure(self, claim: Claim, error: MigratorError) -> AttemptResult:
        """Fail the row or schedule another attempt, as the error's kind says."""
        code, status, in_doubt, retry_after = _describe_failure(error)
        permanent = isinstance(error, PermanentApiError) or (
            isinstance(error, SourceError) and error.permanent
        )
        message = str(error)
        if permanent:
            logger.error("image %s: failed: %s", shown_source(claim.source), message)
            failed = Failed(
                claim.row_id, claim.attempt, claim.owner, code, message, status
            )
            return AttemptResult(failed, "failed", code, healthy=False)
        return self._retry(claim, code, message, status, in_doubt, retry_after)

    def _retry(
        self,
        claim: Claim,
        code: str | None,
        message: str,
        status: int | None,
        in_doubt: bool,
        retry_after: float | None,
    ) -> AttemptResult:
        if claim.attempt >= self.settings.max_attempts:
            message = f"gave up after {claim.attempt} attempts: {message}"
            logger.error("image %s: failed: %s", shown_source(claim.source), message)
            failed = Failed(
                claim.row_id, claim.attempt, claim.owner, code, message, status
            )
            return AttemptResult(failed, "failed", code, healthy=False)

        delay = self._backoff(claim.attempt)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if in_doubt and claim.custom_id is None:
            # Settling looks the image up by its migrator_key; one that Cloudflare
            # is still fetching would not be found yet, and would be sent twice.
            # (A custom ID needs no wait: a second upload of it gets 5409.)
            delay = max(delay, self.settings.settle_delay)
        logger.warning(
            "image %s: attempt %d failed, retrying in %.1f s: %s",
            shown_source(claim.source),
            claim.attempt,
            delay,
            message,
        )
        retried = Retried(
            claim.row_id,
            claim.attempt,
            claim.owner,
            code,
            message,
            status,
            not_before=utcnow() + dt.timedelta(seconds=delay),
            in_doubt=in_doubt,
        )
        # A row still throttled after the client's own retries says nothing about
        # the health of the origin or the credentials.
        healthy = None if retry_after is not None or code == "429" else False
        return AttemptResult(retried, "retried", code, healthy=healthy)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half to all of base x 2^(attempt-1)."""
        settings = self.settings
        ceiling = min(settings.backoff_cap, settings.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def _describe_failure(
    error: MigratorError,
) -> tuple[str | None, int | None, bool, float | None]:
    """Code, HTTP status, whether it may have been acted on, and Retry-After."""
    if isinstance(error, RateLimitedError):
        return error.code or "429", error.http_status, False, error.retry_after
    if isinstance(error, ApiError):
        code = error.code or f"http-{error.http_status}"
        # A 5xx may come after the image was stored; 4xx verdicts come before.
        in_doubt = isinstance(error, TransientApiError)
        return code, error.http_status, in_doubt, None
    if isinstance(error, TransportError):
        return "transport", None, error.may_have_reached, None
    if isinstance(error, SourceError):
        return error.code, None, False, None
    return None, None, True, None
