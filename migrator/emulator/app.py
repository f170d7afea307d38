"""The emulator as one ASGI application: routing, admission, faults, answers.

Three families of routes share one application, since their paths never collide:
the main API under ``/client/v4/accounts/{account_id}/images/``, the batch API
under ``/images/``, and the direct-upload target under ``/upload/``. Control
routes under ``/_emulator/`` read stats, reset state and set faults.

Every API request goes through the same steps: route, admit (token and rate
limit), meet its drawn fault, handle, count, answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from migrator.emulator.envelope import (
    ApiError,
    failure,
    success,
    throttled,
    unauthenticated,
)
from migrator.emulator.faults import NO_FAULT, Decision, FaultPlan, Faults
from migrator.emulator.fetcher import Fetcher
from migrator.emulator.ratelimits import Limiter
from migrator.emulator.routes import ImagesApi
from migrator.emulator.settings import Settings
from migrator.emulator.state import ImageStore, Journal
from migrator.emulator.stats import Stats
from migrator.emulator.tokens import Tokens, bearer

logger = logging.getLogger(__name__)

_MAIN_PREFIX = "/client/v4/accounts/"
# Counted in the stats for a request whose client hung up before it was whole,
# as nginx logs one (no answer is sent).
_CLIENT_CLOSED_REQUEST = 499
_SLOW_PIECES = 2


@dataclasses.dataclass(frozen=True)
class Operation:
    """One route: the handler's name, its method and path below ``images/``."""

    handler: str
    method: str
    path: str
    families: frozenset[str] = frozenset({"main", "batch"})

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(self.path.replace("{image_id}", "(?P<image_id>.+)"))


_MAIN = frozenset({"main"})
_OPERATIONS = tuple(
    (operation, operation.pattern)
    for operation in (
        # Fixed paths first: an image ID may be any string, even "stats".
        Operation("batch_token", "GET", "v1/batch_token", _MAIN),
        Operation("usage_stats", "GET", "v1/stats", _MAIN),
        Operation("list_v1", "GET", "v1", _MAIN),
        Operation("upload", "POST", "v1"),
        Operation("list_v2", "GET", "v2"),
        Operation("direct_upload", "POST", "v2/direct_upload"),
        Operation("details", "GET", "v1/{image_id}"),
        Operation("update", "PATCH", "v1/{image_id}"),
        Operation("delete", "DELETE", "v1/{image_id}"),
    )
)
_TARGET = re.compile(r"/upload/(?P<account_hash>[^/]+)/(?P<image_id>.+)")

Handler = Callable[..., Awaitable[Any]]


class EmulatorApp:
    """The Images API of one account, with its state, limits and faults."""

    def __init__(
        self,
        settings: Settings,
        faults: Faults | None = None,
        data: Path | None = None,
    ) -> None:
        self.settings = settings
        self._journal = Journal(data) if data is not None else None
        key = settings.signing_key or secrets.token_hex(32)
        if self._journal is not None and not settings.signing_key:
            # Kept with the images, so tokens stay valid across a restart.
            key = self._journal.setting("signing_key", key)

        self.stats = Stats()
        self.tokens = Tokens(settings, key)
        self.images = ImageStore(self._journal)
        self.fetcher = Fetcher(settings)
        self.api = ImagesApi(
            settings, self.images, self.tokens, self.stats, self.fetcher
        )
        self.initial_faults = faults or Faults()
        self.plan = FaultPlan(self.initial_faults)
        self.batch_limiter = Limiter(settings.batch_rate)
        self.api_limiter = Limiter(settings.api_rate)
        self.address_limiter = Limiter(settings.address_rate)

    async def aclose(self) -> None:
        """Close the origin client and the data file."""
        await self.fetcher.aclose()
        if self._journal is not None:
            self._journal.close()

    def reset(self) -> None:
        """Forget every image, counter, rate window and fault drawn so far."""
        self.images.clear()
        self.stats = self.api.stats = Stats()
        self.batch_limiter.clear()
        self.api_limiter.clear()
        self.address_limiter.clear()
        self.tokens.forget_expired()
        self.plan = FaultPlan(self.initial_faults)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/_emulator/"):
            response = await self._control(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        family, route, handler, params = self._route(scope["method"], scope["path"])
        decision = self.plan.decide(time.monotonic())
        met = NO_FAULT
        headers: dict[str, str] = {}
        try:
            if handler is None:
                raise ApiError(404, 7003, "No route for the URI")
            if family == "main":
                headers = self._admit_main(request, params.pop("account"))
            elif family == "batch":
                self._admit_batch(request, route, decision)
            # Only admitted requests meet the other faults, as only they reach
            # the servers behind Cloudflare's authentication and rate limits.
            met = decision
            response = await self._handle(handler, request, params, met, headers)
        except ApiError as error:
            response = failure(error, headers)
        except ClientDisconnect:
            # The client hung up before its request was whole (a killed run):
            # there is nobody to answer, and nothing went wrong here.
            self.stats.count_request(route, _CLIENT_CLOSED_REQUEST)
            logger.debug("request %s: the client hung up mid-request", route)
            return
        except Exception:
            # A fault of the emulator itself: answer as Cloudflare's own internal
            # errors do, so a client sees an envelope it knows (code 5500).
            logger.exception("request %s failed inside the emulator", route)
            response = failure(ApiError(500, 5500, "Internal error"), headers)

        if met.name is not None:
            self.stats.faults[met.name] += 1
        self.stats.count_request(route, response.status_code)
        logger.debug(
            "request %s answered %s (fault: %s)", route, response.status_code, met.name
        )
        await _answer(response, met, scope, receive, send)

    async def _handle(
        self,
        handler: Handler,
        request: Request,
        params: dict[str, str],
        decision: Decision,
        headers: dict[str, str],
    ) -> Response:
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.error is not None:
            raise decision.error
        if decision.lose:
            # Received whole but never handled; the answer is cut short like a
            # dropped one. Reading the body first matters: a socket closed with
            # unread bytes still arriving is reset, and the client would see a
            # reset instead of a cut answer.
            await request.body()
            return failure(ApiError(500, 5500, "Internal error"), headers)
        return success(await handler(request, **params), headers=headers)

    def _route(
        self, method: str, path: str
    ) -> tuple[str, str, Handler | None, dict[str, str]]:
        """Find the family, the route's name for stats, the handler and its
        path parameters; the handler is None when no route matches."""
        if path.startswith(_MAIN_PREFIX):
            account, _, rest = path[len(_MAIN_PREFIX) :].partition("/")
            family, below, params = "main", rest, {"account": account}
        elif path.startswith("/images/"):
            family, below, params = "batch", path[1:], {}
        elif found := _TARGET.fullmatch(path):
            if method != "POST":
                return "upload", f"upload {method} (no route)", None, {}
            handler = self.api.receive_direct
            return (
                "upload",
                "upload POST /upload/{hash}/{id}",
                handler,
                found.groupdict(),
            )
        else:
            return "other", f"other {method} (no route)", None, {}

        if below.startswith("images/"):
            below = below[len("images/") :]
            for operation, pattern in _OPERATIONS:
                if operation.method != method or family not in operation.families:
                    continue
                found = pattern.fullmatch(below)
                if found:
                    params.update(found.groupdict())
                    name = f"{family} {method} /images/{operation.path}"
                    return family, name, getattr(self.api, operation.handler), params
        return family, f"{family} {method} (no route)", None, params

    def _admit_main(self, request: Request, account: str) -> dict[str, str]:
        """Check the client address's rate, the API token, the account and the
        token's rate limit; return the rate-limit headers every main-API answer
        carries."""
        now = time.monotonic()
        address = request.client.host if request.client else ""
        by_address = self.address_limiter.admit(address, now)
        if not by_address.allowed:
            raise throttled(by_address.reset)
        token = bearer(request.headers.get("authorization"))
        self.tokens.check_api_token(token)
        assert token is not None
        verdict = self.api_limiter.admit(token, now)
        headers = self.api_limiter.headers(verdict)
        if not verdict.allowed:
            raise throttled(verdict.reset)
        if account != self.settings.account_id:
            raise ApiError(403, 5403, f"Account {account} is not authorized for Images")
        return headers

    def _admit_batch(self, request: Request, route: str, decision: Decision) -> None:
        token = self.tokens.check_batch_token(
            bearer(request.headers.get("authorization"))
        )
        if decision.expire:
            self.tokens.expire(token)
            self.stats.faults["expire"] += 1
            raise unauthenticated()
        if self.settings.batch_list_forbidden and route == "batch GET /images/v2":
            # A 2024 report saw listing refused on the batch host, with a string
            # code (reference section 1).
            raise ApiError(403, "103", "forbidden endpoint")
        verdict = self.batch_limiter.admit(token, time.monotonic())
        if not verdict.allowed:
            raise throttled(verdict.reset)

    async def _control(self, request: Request) -> Response:
        """Answer the control routes: stats, reset and faults."""
        route = (request.method, request.url.path)
        if route == ("GET", "/_emulator/stats"):
            return JSONResponse(self.stats.snapshot(self.images.count()))
        if route == ("POST", "/_emulator/reset"):
            self.reset()
            return JSONResponse({"reset": True})
        if route == ("GET", "/_emulator/faults"):
            return JSONResponse(self.plan.faults.describe())
        if route == ("POST", "/_emulator/faults"):
            try:
                values = json.loads(await request.body() or b"{}")
                faults = Faults().updated(values)
            except (ValueError, TypeError, AttributeError) as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            self.plan = FaultPlan(faults)
            logger.info("emulator faults set to %s", faults)
            return JSONResponse(faults.describe())
        return JSONResponse({"error": "no such control route"}, status_code=404)


async def _answer(
    response: Response, decision: Decision, scope: Scope, receive: Receive, send: Send
) -> None:
    """Send the answer, cut short or slowed down if the drawn fault says so."""
    if decision is NO_FAULT or not (decision.drop or decision.lose or decision.slow):
        await response(scope, receive, send)
        return

    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    body = bytes(response.body)
    if decision.drop or decision.lose:
        # Half the body, then the application returns: the server closes the
        # connection, and the client cannot know whether the request succeeded.
        half = body[: len(body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        return
    piece = max(1, -(-len(body) // _SLOW_PIECES))
    for start in range(0, len(body), piece):
        await asyncio.sleep(decision.slow / _SLOW_PIECES)
        chunk = body[start : start + piece]
        more = start + piece < len(body)
        await send({"type": "http.response.body", "body": chunk, "more_body": more})
