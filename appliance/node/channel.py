"""A two-way call channel between the front and one shard process, over a socket pair.

Either side can :meth:`Channel.call` the other (a request, then its reply or the exception it
raised, re-raised here) or :meth:`Channel.note` it (one way, in order). Calls arriving are run on a
thread pool, so a slow call never holds up the others and a call can call back across the channel
(a shard's push reaches another shard through the front while the front waits on it); notes run
on the reading thread, in the order they were sent, and must be cheap.

Both ends are processes of one node started by the front from the same code, so values cross as
pickles; the socket pair is never reachable from outside (no listening socket). When the other end
goes away every waiting call fails with :class:`~appliance.errors.ShardUnavailable`.

Frames are ``multiprocessing.connection``'s (a 4-byte big-endian length, then the pickle). Frames
sent while another thread is writing go out with its write, and a :meth:`Channel.note_soon`
waits for the next frame (or :data:`NOTE_SOON_SECONDS`), so a shard's metrics notes ride on the
reply or progress note that follows them; the reading side takes every whole frame a read
brings. Nothing is reordered: frames leave in the order they were sent.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import socket
import struct
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from appliance.errors import ShardUnavailable
from appliance.node.db.store import on_behalf_of

log = logging.getLogger(__name__)

# Calls in flight that one side runs at once; past this they queue (a front has at most a few
# hundred HTTP/gRPC requests waiting on a shard, each a short call).
CALL_THREADS = 64
# The longest a note_soon waits for a frame to ride with.
NOTE_SOON_SECONDS = 0.05
READ_BYTES = 1 << 16
_SMALL = struct.Struct("!i")
_LARGE = struct.Struct("!iQ")  # -1, then the length: frames of 2 GiB and more

_CALL, _REPLY, _FAILED, _NOTE = range(4)


class Channel:
    """One end of the channel. ``handler``'s methods named in ``calls`` answer the other side's
    calls and those in ``notes`` its notes; ``on_closed`` runs once when the other end is gone.
    The calls also named in ``inline`` are answered on the reading thread (lookups that never
    block: no hand-off to the pool)."""

    def __init__(self, sock: socket.socket, handler: object, *, calls: Collection[str],
                 notes: Collection[str], name: str,
                 on_closed: Callable[[], None] | None = None,
                 inline: Collection[str] = ()) -> None:
        self._socket = sock
        self._handler = handler
        self._calls = frozenset(calls)
        self._notes = frozenset(notes)
        self._inline = frozenset(inline)
        self._on_closed = on_closed
        self._out_lock = threading.Lock()
        self._out: list[bytes] = []  # frames to write (length, pickle, ...), in order
        self._soon: list[bytes] = []  # note_soon frames waiting for the next frame
        self._writing = False
        self._soon_waiting = threading.Condition(self._out_lock)
        self._soon_parked = False
        self._pending: dict[int, Future[Any]] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix=f"{name}-call")
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-read", daemon=True)
        self._reader.start()
        self._name = name
        self._soon_sender: threading.Thread | None = None  # started by the first note_soon

    @property
    def closed(self) -> bool:
        """True once the other end is gone (or :meth:`close` was called)."""
        return self._closed.is_set()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` on the other side and return what it returned (or raise what it
        raised); :class:`ShardUnavailable` when the other end is gone before it answers."""
        return self._submit(method, args, kwargs, threading.get_ident()).result()

    def submit(self, method: str, *args: Any, **kwargs: Any) -> Future[Any]:
        """:meth:`call` without waiting: the future of its answer (already running, so it cannot
        be cancelled: the other side runs the call whatever the caller does)."""
        return self._submit(method, args, kwargs, None)

    def _submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                caller: int | None) -> Future[Any]:
        """Send the call; ``caller``: the thread that waits for it (the other side's store
        lingers for it), None from an event loop (one thread for many callers)."""
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        call_id = next(self._ids)
        with self._pending_lock:
            if self._closed.is_set():
                raise ShardUnavailable("the shard process is not running", retry_after=2.0)
            self._pending[call_id] = future
        try:
            self._send((_CALL, call_id, method, args, kwargs, caller))
        except BaseException:
            with self._pending_lock:
                self._pending.pop(call_id, None)
            raise
        return future

    def note(self, method: str, *args: Any) -> None:
        """Tell the other side ``method(*args)``; never waits for it, dropped once closed."""
        if self._closed.is_set():
            return
        try:
            self._send((_NOTE, method, args))
        except ShardUnavailable:
            pass
        except Exception:  # an argument that does not pickle: observers never raise
            log.exception("note %s could not be sent", method)

    def note_soon(self, method: str, *args: Any) -> None:
        """:meth:`note`, sent with the next frame or within :data:`NOTE_SOON_SECONDS`: for what
        only has to arrive before anything sent after it (metrics), not at once."""
        if self._closed.is_set():
            return
        try:
            frame = _frame(pickle.dumps((_NOTE, method, args), protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # an argument that does not pickle: observers never raise
            log.exception("note %s could not be sent", method)
            return
        with self._out_lock:
            self._soon += frame
            if self._soon_sender is None:
                self._soon_sender = threading.Thread(target=self._send_soon_loop, daemon=True,
                                                     name=f"{self._name}-soon")
                self._soon_sender.start()
            elif self._soon_parked:
                self._soon_parked = False
                self._soon_waiting.notify()

    def close(self) -> None:
        """Stop reading and fail the calls still waiting (the other end sees end-of-file)."""
        self._shut()
        self._pool.shutdown(wait=False)

    def _send(self, message: tuple[Any, ...] | None) -> None:
        """Queue ``message`` (None: only the waiting note_soon frames) behind the waiting
        note_soon frames, and write all that is queued unless another thread is writing it."""
        frame = None if message is None else _frame(
            pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        with self._out_lock:
            self._out += self._soon
            self._soon.clear()
            if frame is not None:
                self._out += frame
            if self._writing or not self._out:
                return
            self._writing = True
        try:
            while True:
                with self._out_lock:
                    if not self._out:
                        self._writing = False
                        return
                    data = b"".join(self._out)
                    self._out.clear()
                self._socket.sendall(data)
        except BaseException as exc:
            with self._out_lock:
                self._writing = False
            if not isinstance(exc, OSError | ValueError):
                raise
            self._shut()
            raise ShardUnavailable("the shard process went away", retry_after=2.0) from None

    def _send_soon_loop(self) -> None:
        while not self._closed.is_set():
            with self._out_lock:
                while not self._soon and not self._closed.is_set():
                    self._soon_parked = True
                    self._soon_waiting.wait()
            self._closed.wait(NOTE_SOON_SECONDS)
            with contextlib.suppress(ShardUnavailable):
                self._send(None)

    def _received(self) -> Iterator[Any]:
        """The messages the other side sends, in order; EOFError once it hangs up."""
        sock = self._socket
        data = b""
        while True:
            chunk = sock.recv(READ_BYTES)
            if not chunk:
                raise EOFError
            data = data + chunk if data else chunk
            pos = 0
            while len(data) - pos >= _SMALL.size:
                (size,), head = _SMALL.unpack_from(data, pos), _SMALL.size
                if size == -1:
                    if len(data) - pos < _LARGE.size:
                        break
                    size, head = _LARGE.unpack_from(data, pos)[1], _LARGE.size
                end = pos + head + size
                if end > len(data):
                    if size > READ_BYTES:  # a large frame: read the rest of it at once
                        yield pickle.loads(_read_rest(sock, data[pos + head:], size))  # noqa: S301
                        pos = len(data)
                    break
                yield pickle.loads(memoryview(data)[pos + head:end])  # noqa: S301 - our own child/parent
                pos = end
            data = data[pos:]

    def _read_loop(self) -> None:
        try:
            for message in self._received():
                kind = message[0]
                if kind == _CALL:
                    if message[2] in self._inline:
                        self._answer(*message[1:])
                    else:
                        self._pool.submit(self._answer, *message[1:])
                elif kind == _NOTE:
                    self._take_note(message[1], message[2])
                else:
                    with self._pending_lock:
                        future = self._pending.pop(message[1], None)
                    if future is None:
                        continue
                    if kind == _REPLY:
                        future.set_result(message[2])
                    else:
                        future.set_exception(message[2])
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("shard channel failed")
        finally:
            self._shut()

    def _take_note(self, method: str, args: tuple[Any, ...]) -> None:
        if method not in self._notes:
            log.error("unexpected note %r on the shard channel", method)
            return
        try:
            getattr(self._handler, method)(*args)
        except Exception:
            log.exception("note %s failed", method)

    def _answer(self, call_id: int, method: str, args: tuple[Any, ...],
                kwargs: dict[str, Any], caller: int | None) -> None:
        try:
            if method not in self._calls:
                raise AttributeError(f"{method!r} is not a call this side answers")
            value = getattr(self._handler, method)
            with on_behalf_of(None if caller is None else (self, caller)):
                reply: tuple[Any, ...] = (_REPLY, call_id,
                                          value(*args, **kwargs) if callable(value) else value)
        except Exception as exc:  # noqa: BLE001 - the caller re-raises it
            reply = (_FAILED, call_id, _portable(exc))
        try:
            self._send(reply)
        except ShardUnavailable:
            pass
        except Exception as exc:  # the value did not pickle: the caller still gets an answer
            log.exception("reply to %s could not be sent", method)
            self._send((_FAILED, call_id, _portable(exc)))

    def _shut(self) -> None:
        with self._pending_lock:
            if self._closed.is_set():
                return
            self._closed.set()
            pending, self._pending = list(self._pending.values()), {}
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
        self._socket.close()
        with self._out_lock:
            self._soon.clear()
            self._soon_waiting.notify()
        for future in pending:
            future.set_exception(ShardUnavailable("the shard process went away while "
                                                  "answering", retry_after=2.0))
        if self._on_closed is not None:
            self._on_closed()


def _frame(data: bytes) -> tuple[bytes, bytes]:
    """``data``'s length, then ``data``."""
    return (_SMALL.pack(len(data)) if len(data) < 0x7FFFFFFF else _LARGE.pack(-1, len(data)),
            data)


def _read_rest(sock: socket.socket, start: bytes, size: int) -> bytearray:
    """The ``size`` bytes of a frame that begins with ``start``; EOFError if it is cut short."""
    frame = bytearray(size)
    frame[:len(start)] = start
    view = memoryview(frame)[len(start):]
    while view:
        got = sock.recv_into(view)
        if not got:
            raise EOFError
        view = view[got:]
    return frame


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    except Exception:  # noqa: BLE001 - any failure means it does not travel
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    exc.__traceback__ = None
    return exc
