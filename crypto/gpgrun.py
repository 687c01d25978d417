"""Running one gpg process: its argv, its pipes, its status lines, killing it on excess.

Owns the process-wide gpg options, the spawn with a status pipe of its own, the loop that
moves data between gpg's pipes and us, the parsing of status lines, and the stop of a gpg
that goes past its Guard (CPU time, a watch on its status lines). It decides nothing about
what the lines mean (openpgp does, and hands in the watch).

Imports refusals of the project (the names of its stops), and nothing else of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bdi.crypto.refusals import Reason, Refusal

__all__ = [
    "OPTIONS", "FileSink", "GpgResult", "GpgRunner", "Guard", "Sink", "Status", "Writer", "pipe",
]  # fmt: skip

# gpg writes plaintext in chunks of at most 32 KiB; --max-output stops it one chunk early,
# so a limit one slack above ours makes our own byte count the one that decides.
_SLACK = 64 * 1024
_STATUS_MAX = 1024 * 1024  # status lines of a sane message are a few KiB
_STATUS_DRAIN_S = 0.2  # how often the status pipe is emptied while gpg runs
_CPU_CHECK_S = 0.1  # how often gpg's CPU time is read while it runs
_TICKS = os.sysconf("SC_CLK_TCK")
_PIPE_BYTES = 1 << 20  # a pipe to or from gpg holds this much (Linux's default: 64 KiB)
# every gpg of a home runs with these, python-gnupg's too (openpgp hands them over)
OPTIONS = (
    "--trust-model", "always",  # we trust exactly the keys in the home; no trustdb churn or locks
    "--no-auto-key-retrieve",  # a server must never fetch keys while verifying
    "--pinentry-mode", "error",  # never wait for a passphrase prompt
    # libgcrypt locks the seed file with F_SETLK and sleeps 0.25 s, then 1.25 s, ... when
    # another gpg holds it: concurrent sign+encrypt calls stalled for up to 1.5 s. Without
    # the file, each gpg seeds its generator from the kernel (getrandom).
    "--no-random-seed-file",
)  # fmt: skip
# decrypt+verify and sign+encrypt only read the keyring: no lock file. gpg otherwise creates,
# links and deletes one in the home on every call (the lock is released before the keybox is
# read, so it never kept a reader from an import), and on an ext4 without a journal every new
# inode costs a scan past the recently deleted ones. Imports still lock among themselves.
_READ_ONLY = ("--lock-never",)


@dataclass(frozen=True, slots=True)
class GpgResult:
    """What one gpg run left behind: its status lines and how it ended."""

    status: str  # gpg's status lines
    returncode: int  # negative when killed
    stopped: Reason | None = None  # why we killed gpg for what it was given (None: we did not)


@dataclass(frozen=True, slots=True)
class Guard:
    """When to stop a gpg run for what it was given (the caller decides, gpg is killed).

    CPU time is read from /proc while gpg runs (every _CPU_CHECK_S), not enforced with
    RLIMIT_CPU: a limit set on gpg passes to a gpg-agent it starts (the agent lives on and
    would be killed in the middle of other calls), its SIGXCPU dumps a core, and its SIGKILL
    looks like anyone else's; a stop of ours says why. `watch` sees the status lines so far
    and names a reason to stop.
    """

    cpu_seconds: float = math.inf  # CPU time allowed before any output, and ...
    cpu_per_output_byte: float = 0.0  # ... this much more per byte of plaintext out
    watch: Callable[[bytes], Reason | None] | None = None

    def cpu_allowed(self, output: int) -> float:
        return self.cpu_seconds + self.cpu_per_output_byte * output


class Writer(Protocol):
    def write(self, chunk: bytes, /) -> object: ...


def pipe() -> tuple[int, int]:
    """A pipe (read end, write end) to stream data to gpg's stdin (`GpgRunner.run` with the
    read end as src), made bigger than Linux's 64 KiB so that writer and gpg wait on each
    other less often."""
    read, write = os.pipe()
    _widen(write)
    return read, write


def _widen(fd: int) -> None:
    with contextlib.suppress(OSError):  # past /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


class Sink:
    """Receives gpg's plaintext and writes at most `limit` bytes of it to `out`."""

    def __init__(self, out: Writer, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.error: OSError | None = None
        self._file = out

    def write(self, chunk: bytes) -> None:
        """Count every chunk; write it only while the total stays within the limit."""
        self.size += len(chunk)
        if self.error is None and self.size <= self.limit:
            try:
                self._file.write(chunk)
            except OSError as exc:
                self.error = exc

    @property
    def too_large(self) -> bool:
        return self.size > self.limit


class FileSink:
    """gpg's plaintext written by gpg itself into an open file (its stdout is that file):
    nothing passes through Python, whose threads would otherwise take the interpreter lock
    back for every chunk of a big file while another thread checks it (a 5 ms wait each,
    at worst). What it wrote so far is the file's size; past `limit` gpg is killed (the
    size is looked at whenever its run wakes up, and gpg's own --max-output stops it soon
    after the limit anyway)."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.limit = fd, limit
        self.error: OSError | None = None

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size

    @property
    def too_large(self) -> bool:
        return self.size > self.limit


class GpgRunner:
    """Runs gpg in one home, at most `max_processes` at once (None: no limit).

    Every call blocks until its gpg has exited, and is meant to run in a worker thread.
    """

    def __init__(self, home: Path, max_processes: int | None = None) -> None:
        self.home = home
        # found once: otherwise every call's child tries each folder of PATH in turn
        self.binary = shutil.which("gpg") or "gpg"
        self._slots = threading.BoundedSemaphore(max_processes) if max_processes else None

    def try_reserve(self) -> bool:
        """Take one of the `max_processes` places now if one is free, for a run started
        later with `reserved=True` (which gives it back). Never waits: a job that already
        holds a place (its decryption) and waited for a second one could wait forever on
        other jobs doing the same."""
        return self._slots is None or self._slots.acquire(blocking=False)

    def release(self) -> None:
        """Give back a place taken by `try_reserve` and not used by a run."""
        if self._slots is not None:
            self._slots.release()

    def decrypt(
        self, src: Path | bytes, sink: Sink | FileSink, guard: Guard | None = None
    ) -> GpgResult:
        """Run gpg --decrypt on src (a file, or bytes fed on its stdin), streaming its stdout
        into sink; kill it past the limit or its guard.

        Not python-gnupg: it cannot kill gpg, and gpg, once past --max-output, still inflates
        the rest of a compressed packet (~0.5 s per 200 MB of zeros, far more for bzip2).
        """
        args = ["--max-output", str(sink.limit + _SLACK), "--decrypt"]
        return self.run(args, src, sink, guard)

    def run(
        self, args: list[str], src: Path | bytes | int, sink: Sink | FileSink | None = None,
        guard: Guard | None = None, reserved: bool = False,
    ) -> GpgResult:  # fmt: skip
        """Run gpg with `args` on src (a file it reads itself, bytes fed on its stdin, or the
        read end of a `pipe` that becomes its stdin: closed here once gpg holds it, so that
        a writer sees gpg's end), its stdout into `sink` if given; collect its status. gpg
        is killed if anything goes wrong, or once past its guard (then `stopped` says why).
        `reserved`: run in the place taken by `try_reserve` (given back at the end)."""
        feed = None
        stdin: bool | int = False
        if isinstance(src, Path):
            with src.open("rb"):  # fail with the usual error if src is missing
                pass
            args = [*args, "--", str(src)]
        elif isinstance(src, int):
            stdin = src
        else:
            feed, stdin = src, True
        stdout = (subprocess.DEVNULL if sink is None else sink.fd if isinstance(sink, FileSink)
                  else subprocess.PIPE)  # fmt: skip
        with self._gpg_process(args, stdout, stdin, reserved) as (proc, status_fd):
            run = _Run(proc, sink, guard or Guard())
            try:
                status = _pump(run, status_fd, feed)
            finally:
                if proc.poll() is None:
                    proc.kill()
        return GpgResult(status, proc.returncode, run.stopped)

    @contextlib.contextmanager
    def _gpg_process(
        self, args: list[str], stdout: int, stdin: bool | int = False, reserved: bool = False
    ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
        """gpg with its status lines on a pipe of their own, so nothing it logs can pass for
        one; yields the process and that pipe's read end, and reaps the process on exit.
        `stdin`: True to give it a pipe to read its input from, or a pipe's read end."""
        with (
            self._place(reserved),
            self._spawn(args, stdout, stdin) as spawned,
        ):
            yield spawned

    @contextlib.contextmanager
    def _place(self, reserved: bool) -> Iterator[None]:
        if self._slots is None:
            yield
        elif reserved:
            try:
                yield
            finally:
                self._slots.release()
        else:
            with self._slots:
                yield

    @contextlib.contextmanager
    def _spawn(
        self, args: list[str], stdout: int, stdin: bool | int
    ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
        """Start gpg; our copy of the status pipe's write end is closed once gpg has its own,
        so that the read end sees the end of the pipe when gpg exits (and likewise our copy
        of a pipe given as its stdin, so that its writer sees gpg's end)."""
        status_read, status_write = os.pipe()
        argv = [self.binary, "--homedir", str(self.home), "--batch", "--no-tty", *OPTIONS,
                *_READ_ONLY, "--status-fd", str(status_write), *args]  # fmt: skip
        given = stdin if not isinstance(stdin, bool) else None
        try:
            with subprocess.Popen(
                argv,
                stdin=given
                if given is not None
                else subprocess.PIPE
                if stdin
                else subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.DEVNULL,
                pass_fds=(status_write,),
            ) as proc:
                os.close(status_write)
                status_write = -1
                if given is not None:
                    os.close(given)
                    given = None
                if proc.stdout is not None:
                    _widen(proc.stdout.fileno())
                yield proc, status_read
        finally:
            os.close(status_read)
            if status_write >= 0:
                os.close(status_write)
            if given is not None:
                os.close(given)


# -- serving gpg's pipes ----------------------------------------------------------------


class _Feed:
    """Writes a message to gpg's stdin as the pipe takes it (gpg may write its output
    before it has read all of its input: both pipes are served by one loop)."""

    def __init__(self, proc: subprocess.Popen[bytes], data: bytes) -> None:
        assert proc.stdin is not None
        self.pipe, self.data, self.offset = proc.stdin, memoryview(data), 0
        os.set_blocking(self.pipe.fileno(), False)

    def write(self) -> bool:
        """Write what the pipe takes now; True once all is written (or gpg stopped reading)."""
        try:
            self.offset += os.write(
                self.pipe.fileno(), self.data[self.offset : self.offset + 65536]
            )
        except BlockingIOError:
            return False
        except BrokenPipeError:
            self.offset = len(self.data)
        return self.offset >= len(self.data)


class _StatusPipe:
    """gpg's status lines, read without waking for each: gpg writes every line on its own,
    and a wakeup of the calling thread (and its wait for the interpreter lock) per line cost
    more than the reading. The pipe holds a sane message's status whole (~2 KB of 64 KB); it
    is emptied once gpg has exited, and every _STATUS_DRAIN_S meanwhile, so that a message
    making gpg write more cannot block it."""

    def __init__(self, fd: int) -> None:
        self.fd, self.data = fd, bytearray()
        os.set_blocking(fd, False)

    def drain(self) -> None:
        """Read what is there now; past _STATUS_MAX the rest is dropped (too_large says so)."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            if len(self.data) <= _STATUS_MAX:
                self.data += chunk

    @property
    def too_large(self) -> bool:
        return len(self.data) > _STATUS_MAX


class _Run:
    """One gpg process being served, and the first reason we had to kill it."""

    def __init__(
        self, proc: subprocess.Popen[bytes], sink: Sink | FileSink | None, guard: Guard
    ) -> None:
        self.proc, self.sink, self.guard = proc, sink, guard
        self.stopped: Reason | None = None
        self._cpu_checked = time.monotonic()
        self._watched = 0  # status bytes the watch has seen

    def check(self, status: _StatusPipe) -> None:
        """Kill gpg at the first excess: output, status, CPU time, or the watch's word."""
        if self.stopped is None:
            self.stopped = self._excess(status)
            if self.stopped is not None and self.proc.poll() is None:
                self.proc.kill()  # stop now: the pipes then drain and close

    def _excess(self, status: _StatusPipe) -> Reason | None:
        if self.sink is not None and self.sink.too_large:
            return Reason(Refusal.TOO_LARGE)
        if status.too_large:
            return Reason(Refusal.TOO_MANY_STATUS_LINES)
        if self.guard.watch is not None and len(status.data) > self._watched:
            self._watched = len(status.data)
            if (reason := self.guard.watch(bytes(status.data))) is not None:
                return reason
        return self._cpu_excess()

    def _cpu_excess(self) -> Reason | None:
        now = time.monotonic()
        if math.isinf(self.guard.cpu_seconds) or now - self._cpu_checked < _CPU_CHECK_S:
            return None
        self._cpu_checked = now
        allowed = self.guard.cpu_allowed(self.sink.size if self.sink is not None else 0)
        used = _cpu_seconds(self.proc.pid)
        if used is not None and used > allowed:
            return Reason(Refusal.TOO_MUCH_WORK, allowed)
        return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running (or exited, not yet reaped) process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (proc(5))
    except (OSError, IndexError, ValueError):
        return None


def _pump(run: _Run, status_fd: int, feed: bytes | None = None) -> str:
    """Serve gpg until it exits: its output into the run's sink (if any), `feed` to its stdin
    (if any), its status lines collected and returned; kill it on excess."""
    status = _StatusPipe(status_fd)
    exited = os.pidfd_open(run.proc.pid)  # readable once gpg has exited
    try:
        _serve_until_exit(run, exited, status, feed)
    finally:
        os.close(exited)
    run.proc.wait()
    status.drain()  # gpg is gone: all it wrote is in the pipe (whoever else may hold it)
    if status.too_large:
        return ""  # no status lines: refused as "not OpenPGP"
    return status.data.decode("utf-8", "replace")


def _serve_until_exit(run: _Run, exited: int, status: _StatusPipe, feed: bytes | None) -> None:
    """Move data between gpg's pipes and us until it has exited (`exited`: its pidfd) and
    closed its output."""
    proc = run.proc
    with selectors.DefaultSelector() as selector:
        selector.register(exited, selectors.EVENT_READ, "exit")
        if isinstance(run.sink, Sink):
            assert proc.stdout is not None
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, run.sink)
        if feed is not None:
            writer = _Feed(proc, feed)
            selector.register(writer.pipe.fileno(), selectors.EVENT_WRITE, writer)
        while selector.get_map():
            events = selector.select(_STATUS_DRAIN_S)
            if not events:
                status.drain()
            for key, _ in events:
                _serve(selector, key)
            run.check(status)


def _serve(selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
    """One ready pipe (or gpg's exit): move data; forget the pipe once it is done."""
    if isinstance(key.data, _Feed):
        if key.data.write():
            selector.unregister(key.fd)
            key.data.pipe.close()  # end of input
        return
    if key.data == "exit":
        selector.unregister(key.fd)
        return
    chunk = os.read(key.fd, 65536)
    if not chunk:
        selector.unregister(key.fd)
    else:
        key.data.write(chunk)


# -- status lines -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """gpg's status lines, split on newline only (python-gnupg also splits on U+0085)."""

    lines: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def parse(cls, stderr: str) -> Status:
        lines = []
        for line in stderr.split("\n"):
            if line.startswith("[GNUPG:] "):
                keyword, *args = line[9:].rstrip("\r").split(" ")
                lines.append((keyword, tuple(args)))
        return cls(tuple(lines))

    def count(self, keyword: str) -> int:
        return sum(1 for k, _ in self.lines if k == keyword)

    def args(self, keyword: str) -> tuple[str, ...]:
        return next((a for k, a in self.lines if k == keyword), ())
