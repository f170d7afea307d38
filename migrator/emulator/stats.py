"""What an emulator saw: requests by route and status, uploads and refusals."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    """Counters read by ``GET /_emulator/stats`` and cleared by a reset."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.faults: Counter[str] = Counter()
        self.uploads_attempted = 0
        self.uploads_stored = 0
        self.duplicates_refused = 0
        self.throttled = 0
        self.batch_tokens_issued = 0

    def count_request(self, route: str, status: int) -> None:
        self.requests[route, status] += 1
        if status == 429:
            self.throttled += 1

    def snapshot(self, images: int) -> dict[str, Any]:
        """Return every counter as JSON-ready data; ``images`` is how many are held."""
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.requests.items()):
            by_route.setdefault(route, {})[str(status)] = count
        return {
            "requests": by_route,
            "requests_total": sum(self.requests.values()),
            "uploads": {
                "attempted": self.uploads_attempted,
                "stored": self.uploads_stored,
                "duplicates_refused": self.duplicates_refused,
            },
            "throttled": self.throttled,
            "faults": dict(self.faults),
            "batch_tokens_issued": self.batch_tokens_issued,
            "images": images,
        }
