"""Parser processes: document parsing off the worker's process, under a time limit.

Parsers (pymupdf, docling) are native code that can hang, crash or eat memory on a bad
document, and a thread cannot be stopped. So each parse runs in a separate Python process
that we can kill: a request goes over a socket, the Markdown comes back. A process that
overruns the limit or dies is discarded and a fresh one takes its place on the next request;
an idle one is kept, so its imports and docling's converter are paid for once.

The processes are started as fresh interpreters running `serve_main` (not forked: the
worker has threads and an event loop) and run with the Hugging Face hub offline, so a parser
never downloads a model behind our back.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any

from vectorizer.errors import TransientError
from vectorizer.stages import document_settings

log = logging.getLogger(__name__)

# Parsers leak a little per document (caches, fragmentation); a process retires after this
# many documents to keep the worker's memory flat.
DOCUMENTS_PER_PROCESS = 200
# A parser's own error text is quoted in error rows; keep those readable.
MAX_ERROR_CHARS = 1000
# How often a parser process checks that the worker that started it is still there.
_ORPHAN_CHECK_SECONDS = 1.0
_KILL_WAIT_SECONDS = 10.0

# `-c` rather than `-m`: this module is already imported as part of the package by then.
_CHILD_MAIN = f"import sys; from {__name__} import serve_main; serve_main(sys.argv)"

# Environment of every parser process: no hub access, and no tokenizer thread pools that
# would outlive a parse.
_PARSER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class ParserFailure(Exception):
    """The parse did not produce text; `message` says why, for the row's error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ParserRaised(ParserFailure):
    """The parser raised an exception on this document."""


class ParserTimedOut(ParserFailure):
    """The parse overran its time limit; the process was killed."""


class ParserCrashed(ParserFailure):
    """The parser process died while parsing (segfault, out of memory, os._exit)."""


# --- the parent's side -------------------------------------------------------------------


class _ParserProcess:
    """One parser process and the socket to it."""

    def __init__(self) -> None:
        parent_end, child_end = Pipe(duplex=True)
        env = {**os.environ, **_PARSER_ENV, "PYTHONPATH": _python_path()}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_MAIN, str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                # Parsers print progress and banners; only our socket carries results.
                stdout=subprocess.DEVNULL,
                env=env,
            )
        finally:
            child_end.close()
        self.conn: Connection = parent_end
        self.documents = 0

    def run(self, function: str, args: tuple[Any, ...], timeout: float) -> str:
        try:
            self.conn.send((function, args))
        except OSError as exc:
            raise ParserCrashed(f"the parser process had exited ({self._exit()})") from exc
        self.documents += 1
        if not self.conn.poll(timeout):
            self.kill()
            raise ParserTimedOut(f"parsing took longer than {timeout:g}s")
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise ParserCrashed(f"the parser process died ({self._exit()})") from exc
        if status == "ok":
            # str subclasses (PagedText) keep what they carry
            return value if isinstance(value, str) else str(value)
        raise ParserRaised(str(value))

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.conn.close()
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(_KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            log.warning("parser process %s did not exit after SIGKILL", self.process.pid)

    def stop(self) -> None:
        """SIGKILL from any thread; the thread waiting on the socket sees it closed and
        cleans up (closing the socket under its feet instead could leave it waiting)."""
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        # Closing the socket ends the process's loop; kill it if it is busy or stuck.
        self.conn.close()
        try:
            self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            self.kill()

    def _exit(self) -> str:
        try:
            code = self.process.wait(_KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        self.conn.close()
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


class _Call:
    """One request's link to the process serving it, so a cancelled caller can stop it."""

    def __init__(self) -> None:
        self.process: _ParserProcess | None = None
        self.abandoned = False

    def abandon(self) -> None:
        self.abandoned = True
        if self.process is not None:
            self.process.stop()


class ParserPool:
    """Up to `size` parser processes, shared by every vectorizer of the worker."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_ParserProcess] = []
        self._busy: set[_ParserProcess] = set()
        self._closed = False
        # Async callers wait here, not in the default executor, so parses queued behind a
        # busy pool never starve the worker's other to_thread work.
        self._threads = ThreadPoolExecutor(size, thread_name_prefix="vectorizer-parse")

    def run(
        self, function: str, args: tuple[Any, ...], timeout: float, call: _Call | None = None
    ) -> str:
        """Call `function` ("module:name") with `args` in a parser process; blocking.

        The time limit starts when a process takes the document, not while it waits for one.
        """
        call = call or _Call()
        with self._slots:
            process = self._take()
            with self._lock:
                self._busy.add(process)
            call.process = process
            try:
                if call.abandoned:
                    raise ParserFailure("the parse was cancelled")
                result = process.run(function, args, timeout)
            except ParserRaised:
                self._give_back(process)
                raise
            except BaseException:
                # Timed out, died, cancelled or interrupted: its state is unknown, so it goes.
                process.kill()
                raise
            finally:
                with self._lock:
                    self._busy.discard(process)
            self._give_back(process)
            return result

    async def run_async(self, function: str, args: tuple[Any, ...], timeout: float) -> str:
        loop = asyncio.get_running_loop()
        call = _Call()
        work = functools.partial(self.run, function, args, timeout, call)
        try:
            return await loop.run_in_executor(self._threads, work)
        except asyncio.CancelledError:
            # Nobody waits for this document any more (shutdown, batch cancelled): free the
            # thread now rather than when the parse ends or times out.
            call.abandon()
            raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for process in idle:
            process.close()
        for process in busy:
            process.stop()
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _take(self) -> _ParserProcess:
        with self._lock:
            if self._closed:
                # Not the document's fault: the batch rolls back and its keys stay uncharged.
                raise TransientError("the worker is shutting down; parsing stopped")
            while self._idle:
                process = self._idle.pop()
                if process.alive():
                    return process
                process.kill()
        started = time.monotonic()
        process = _ParserProcess()
        log.debug(
            "started parser process %s in %.2fs", process.process.pid, time.monotonic() - started
        )
        return process

    def _give_back(self, process: _ParserProcess) -> None:
        if process.documents >= DOCUMENTS_PER_PROCESS or not process.alive():
            process.close()
            return
        with self._lock:
            if not self._closed:
                self._idle.append(process)
                return
        process.close()


_pool: ParserPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> ParserPool:
    """The worker's parser pool, created on first use (sized by VECTORIZER_PARSE_WORKERS)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ParserPool(document_settings.parse_workers())
            atexit.register(_pool.close)
        return _pool


def close_pool() -> None:
    """Stop every parser process (the next parse starts a new pool)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


def _python_path() -> str:
    # The child must import this package however the worker found it (editable install,
    # PYTHONPATH, or the current directory).
    root = str(Path(__file__).resolve().parents[2])
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([root, existing]) if existing else root


# --- the parser process's side -----------------------------------------------------------


def _serve(conn: Connection) -> None:
    parent = os.getppid()
    watchdog = threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True)
    watchdog.start()
    while True:
        try:
            function, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, str] = ("ok", _resolve(function)(*args))
        except Exception as exc:
            reply = ("error", _describe(exc))
        try:
            conn.send(reply)
        except OSError:
            return


def _resolve(function: str) -> Any:
    module_name, _, attribute = function.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    log.debug("parser error: %s", "".join(traceback.format_exception(exc)))
    return message


def _exit_when_orphaned(parent: int) -> None:
    # A parse that hangs never reads the closed socket; this ends the process anyway.
    while os.getppid() == parent:
        time.sleep(_ORPHAN_CHECK_SECONDS)
    os._exit(1)


def serve_main(argv: list[str]) -> None:
    """Entry point of a parser process: `argv[1]` is the socket's file descriptor."""
    # Ctrl-C reaches the whole process group; the worker decides when parsers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="parser %(levelname)s %(name)s: %(message)s")
    _serve(Connection(int(argv[1])))
