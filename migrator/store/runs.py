"""The history of runs: who ran when, for how long, and how each run ended."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping

from sqlalchemy import insert, update

from migrator.store.database import Database, utcnow
from migrator.store.schema import runs


class Runs(Database):
    """Recording ``migrator run`` invocations, for status and for audits."""

    def start_run(self, owner: str) -> int:
        """Record that a run by ``owner`` starts now on this host; return its id."""
        with self.transaction() as connection:
            result = connection.execute(
                insert(runs).values(
                    owner=owner,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=utcnow(),
                    requests=0,
                    throttled=0,
                )
            )
        (run_id,) = result.inserted_primary_key or (None,)
        assert run_id is not None
        return int(run_id)

    def finish_run(
        self,
        run_id: int,
        exit_reason: str,
        counts: Mapping[str, int],
        requests: int,
        throttled: int,
    ) -> None:
        """Record how run ``run_id`` ended and what it did."""
        with self.transaction() as connection:
            connection.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    ended_at=utcnow(),
                    exit_reason=exit_reason,
                    counts=json.dumps(dict(counts), sort_keys=True),
                    requests=requests,
                    throttled=throttled,
                )
            )
