"""Manifest rows in batches, read in a child process when the manifests are files.

Loading a large manifest is two jobs of about the same size: reading and checking
rows (Python) and inserting them (mostly SQLite). Python runs one thread at a time,
so they only overlap when the reading happens in another process. ``read_batches``
starts one (a fresh interpreter, never a fork: the parent may already run threads)
which reads every manifest in turn and hands each batch over a pipe as a flat list
of plain values, in marshal's format, the cheapest Python has to write and read.
Standard input is not handed to a child: a manifest list with ``-`` is read by a
thread of this process instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import itertools
import logging
import marshal
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from migrator.errors import ManifestError
from migrator.manifest.formats import STDIN, Format, manifest_rows
from migrator.manifest.rows import IdFrom, ManifestRow, RowError

logger = logging.getLogger(__name__)

ROW_WIDTH = len(ManifestRow._fields)
"""Values each row takes in ``RowBatch.values``."""

BATCH_ROWS = 2_500
"""Manifest lines per batch, valid or not: enough that handing a batch over costs
little beside reading it, few enough that the batches in flight in both processes
take a few megabytes."""

# How long the parent waits for a finished child to exit before killing it.
_CHILD_EXIT_S = 5.0
# What the reading child's pipe is grown to: Linux's default largest size.
_PIPE_BYTES = 1 << 20
# Allocations between two runs of the reading child's cycle collector.
_READER_COLLECT_EVERY = 100_000


@dataclass(frozen=True, slots=True)
class RowBatch:
    """Consecutive lines of a manifest: the valid rows, and the errors among them.

    ``values`` holds the rows' fields one after another, ``ROW_WIDTH`` a row, in
    ``ManifestRow`` order: the shape a multi-row insert binds, and far cheaper to
    hand between processes than as many tuples.
    """

    values: list[Any]
    errors: list[RowError]

    def __len__(self) -> int:
        """The number of valid rows."""
        return len(self.values) // ROW_WIDTH

    def keys(self) -> list[str]:
        """Every row's key, in order."""
        return self.values[0::ROW_WIDTH]

    def rows(self) -> list[ManifestRow]:
        """The valid rows as ``ManifestRow`` objects."""
        values = self.values
        return [
            ManifestRow._make(values[start : start + ROW_WIDTH])
            for start in range(0, len(values), ROW_WIDTH)
        ]


def flatten(rows: Iterable[ManifestRow]) -> list[Any]:
    """Rows' fields one after another, as ``RowBatch.values`` holds them."""
    return list(itertools.chain.from_iterable(rows))


def batched(
    items: Iterable[ManifestRow | RowError], size: int = BATCH_ROWS
) -> Iterator[RowBatch]:
    """Group manifest lines, valid or not, into batches of ``size`` lines."""
    remaining = iter(items)
    while lines := list(itertools.islice(remaining, size)):
        # Comprehensions over a whole batch cost less than a loop that sorts each
        # line, and a batch without errors, the usual one, needs only one.
        errors = [line for line in lines if isinstance(line, RowError)]
        rows = (
            [line for line in lines if not isinstance(line, RowError)]
            if errors
            else cast(list[ManifestRow], lines)
        )
        yield RowBatch(flatten(rows), errors)


def read_batches(
    paths: Sequence[str],
    *,
    format: Format | None = None,
    id_from: IdFrom | None = None,
    stdin: IO[bytes] | None = None,
    size: int = BATCH_ROWS,
) -> Generator[RowBatch, None, None]:
    """Read manifests as ``manifest_rows`` does, a batch at a time, ahead of use.

    Files are read by a child process, started at once so that it reads while
    the caller gets ready; stdin is read by a thread. Either stays at most a
    batch or two ahead of the consumer, so memory stays flat. Errors the
    reading raises (``ManifestError`` for a manifest that cannot be opened) are
    raised here. Closing the iterator, used or not, stops the reader.
    """
    if STDIN in paths:
        rows = manifest_rows(paths, format=format, id_from=id_from, stdin=stdin)
        return in_background(batched(rows, size))
    batches = _read_in_child(list(paths), format, id_from, size)
    next(batches)
    return cast(Generator[RowBatch, None, None], batches)


@dataclass(frozen=True)
class _End:
    error: BaseException | None


def in_background(items: Iterator[RowBatch]) -> Generator[RowBatch, None, None]:
    """Produce ``items`` in a thread, at most one ahead of the consumer.

    An exception in the thread is raised here, in the consumer. If the consumer
    stops early, the thread stops at its next hand-over.
    """
    handoff: queue.Queue[RowBatch | _End] = queue.Queue(maxsize=1)
    stopped = threading.Event()

    def hand_over(item: RowBatch | _End) -> bool:
        while not stopped.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
        except BaseException as error:
            hand_over(_End(error))
        else:
            hand_over(_End(None))

    thread = threading.Thread(target=produce, name="manifest-reader", daemon=True)
    thread.start()
    try:
        while not isinstance(item := handoff.get(), _End):
            yield item
        if item.error is not None:
            raise item.error
    finally:
        stopped.set()


# What the child sends, each message marshalled on its own and preceded by its
# length: a kind, its payload, and the log records the child made since the last
# message, for the parent to log. A batch's errors travel as tuples of their
# fields, the exception that stopped a child as pickled bytes.
_BATCH = "batch"
_FINISHED = "finished"
_FAILED = "failed"
_LENGTH = struct.Struct("<Q")
_Record = tuple[str, int, str]

# The child is started with -I, so that files in the working directory cannot
# shadow a module, and is then given the parent's import path.
_BOOTSTRAP = (
    "import pickle, sys; path, arguments = pickle.load(sys.stdin.buffer); "
    "sys.path[:] = path; "
    "from migrator.manifest.batches import child_main; child_main(*arguments)"
)


def _read_in_child(
    paths: list[str], format: Format | None, id_from: IdFrom | None, size: int
) -> Generator[RowBatch | None, None, None]:
    """Read manifests in a child process; yield its batches; stop it when done.

    The first step starts the child and yields ``None``: it leaves the generator
    inside the block that stops the child, so that closing it always does.
    """
    # A session of its own keeps Ctrl-C at the terminal away from the child: the
    # parent handles it, and ends the child on its way out.
    child = subprocess.Popen(
        [sys.executable, "-I", "-c", _BOOTSTRAP],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    _widen_pipe(child.stdout)
    finished = False
    try:
        _start(child, (paths, format, id_from, size, _log_level()))
        yield None
        while True:
            kind, payload, records = _receive(child)
            _log_records(records)
            if kind == _BATCH:
                values, errors = payload
                yield RowBatch(values, [RowError(*error) for error in errors])
            elif kind == _FAILED:
                # Only our own child writes to this pipe.
                raise pickle.loads(payload)  # noqa: S301
            else:
                finished = True
                return
    finally:
        _stop(child, finished)


def _widen_pipe(pipe: IO[bytes] | None) -> None:
    """Let the child write a batch or more ahead while the parent inserts one.

    A pipe holds 64 KiB by default, so the child would wait on every batch until
    the parent read it. Linux lets a process grow it up to ``pipe-max-size``
    (1 MiB unless changed); elsewhere, or if refused, the pipe stays as it is.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if pipe is None or set_size is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), set_size, _PIPE_BYTES)


def _start(child: subprocess.Popen[bytes], arguments: tuple[Any, ...]) -> None:
    """Tell the child where to import migrator from, and what to read."""
    assert child.stdin is not None
    # A child that died at once is reported by the first _receive.
    with contextlib.suppress(BrokenPipeError):
        pickle.dump((sys.path, arguments), child.stdin, pickle.HIGHEST_PROTOCOL)
        child.stdin.close()


def _receive(child: subprocess.Popen[bytes]) -> Any:
    """The child's next message; ``ManifestError`` if it ended without one."""
    assert child.stdout is not None
    head = child.stdout.read(_LENGTH.size)
    size = _LENGTH.unpack(head)[0] if len(head) == _LENGTH.size else 0
    body = child.stdout.read(size) if size else b""
    if len(body) < size or not size:
        child.wait()
        raise ManifestError(
            "manifest reader process stopped unexpectedly "
            f"(exit code {child.returncode}); load again to resume"
        )
    # Only our own child writes to this pipe.
    return marshal.loads(body)  # noqa: S302


def _stop(child: subprocess.Popen[bytes], finished: bool) -> None:
    """Let a child that has sent everything exit; end one that has not."""
    if not finished and child.poll() is None:
        child.kill()
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        child.wait(_CHILD_EXIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _log_level() -> int:
    """The level below which the child need not even make a log record."""
    return logging.getLogger("migrator").getEffectiveLevel()


def _log_records(records: list[_Record]) -> None:
    for name, level, message in records:
        logging.getLogger(name).log(level, "%s", message)


class _RecordList(logging.Handler):
    """Keeps the child's log records until they go to the parent."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[_Record] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))

    def take(self) -> list[_Record]:
        taken, self.records = self.records, []
        return taken


def child_main(
    paths: list[str],
    format: Format | None,
    id_from: IdFrom | None,
    size: int,
    level: int,
) -> None:
    """Read the manifests and send their batches on stdout, then how it ended."""
    # Messages go out on a copy of stdout; stdout itself becomes stderr, so that
    # nothing printed by accident can break a message.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    records = _RecordList()
    root = logging.getLogger()
    root.addHandler(records)
    root.setLevel(level)

    def send(kind: str, payload: Any) -> None:
        body = marshal.dumps((kind, payload, records.take()))
        out.write(_LENGTH.pack(len(body)))
        out.write(body)
        out.flush()

    try:
        _send_batches(send, paths, format, id_from, size)
    except ConnectionError:
        # The pipe broke: the parent stopped reading and wants nothing more.
        pass
    finally:
        with contextlib.suppress(ConnectionError):
            out.close()


def _send_batches(
    send: Callable[[str, Any], None],
    paths: list[str],
    format: Format | None,
    id_from: IdFrom | None,
    size: int,
) -> None:
    """Send every batch, then either the end or the error that stopped reading."""
    # Every batch allocates thousands of row tuples that live until it is sent,
    # and the cycle collector, at its default pace, walks them again and again
    # (a tenth of the reading time). Rows hold no cycles: the modules loaded so
    # far are set aside for good, and the collector runs far less often.
    gc.freeze()
    gc.set_threshold(_READER_COLLECT_EVERY)
    try:
        rows = manifest_rows(paths, format=format, id_from=id_from)
        for batch in batched(rows, size):
            errors = [
                (error.manifest, error.line, error.field, error.message)
                for error in batch.errors
            ]
            send(_BATCH, (batch.values, errors))
    except ConnectionError:
        raise
    except Exception as error:
        # Whatever stopped the reading is the parent's to raise.
        send(_FAILED, _pickled(error))
    else:
        send(_FINISHED, None)


def _pickled(error: Exception) -> bytes:
    """The error pickled, or a ``ManifestError`` naming it if it cannot be."""
    try:
        pickled = pickle.dumps(error)
        pickle.loads(pickled)  # noqa: S301  (made just above)
    except Exception:
        pickled = pickle.dumps(ManifestError(f"reading the manifest failed: {error!r}"))
    return pickled
