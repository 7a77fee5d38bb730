"""The supervisor: claim the port, start the workers, serve their /metrics, forward signals.

It imports nothing of the server (the agent core, pydantic-ai, SQLAlchemy; grpc comes only
with the CLI that calls it): it only starts processes, so it stays small (about 50 MiB
resident), and a fresh interpreter per worker (`spawn`) means nothing of it is inherited.
A worker that exits unasked stops them all (the others drain) and the supervisor exits 1: the
orchestrator restarts the whole server, visibly, rather than a crash loop hiding inside it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from woolly_grpc.api import SERVICE_NAME
from woolly_grpc.config import Settings, StartupError

from . import worker

_log = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")
"""Workers start as fresh interpreters: grpc's threads do not survive a fork."""


@dataclass
class _Worker:
    number: int
    process: BaseProcess
    messages: Connection
    """What the worker tells the supervisor while it starts (`worker.SERVING` or why not)."""
    serving: bool = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


def supervise(settings: Settings) -> int:
    """Serve with `settings.workers` processes on one port until SIGTERM or SIGINT.

    Returns:
        The exit code: 0 when every worker drained and stopped when asked, 1 when one exited
        unasked (the others were stopped).

    Raises:
        StartupError: The port or the metrics port is taken, or a worker could not start (with
            that worker's one-line reason; the others are stopped first).
    """
    port, held = _claim_port(settings.host, settings.port)
    with contextlib.ExitStack() as stack:
        for sock in held:
            stack.enter_context(sock)
        metrics_dir = stack.enter_context(_shared_metrics(settings))
        supervisor = _Supervisor(
            settings.model_copy(update={"port": port, "metrics_port": 0}), metrics_dir
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, supervisor.forward)
        try:
            supervisor.start()
        finally:
            for sock in held:  # the workers listen now (or start-up failed): the port is theirs
                sock.close()
        if not supervisor.stopping:
            _log.info(
                "%d workers serving %s on %s:%d (pids %s)",
                len(supervisor.workers),
                SERVICE_NAME,
                settings.host,
                port,
                ", ".join(str(w.pid) for w in supervisor.workers),
            )
        return supervisor.wait()
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


class _Supervisor:
    """The workers' processes, and whether they were asked to stop."""

    def __init__(self, settings: Settings, metrics_dir: str | None) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        """Where the workers write their metrics; None without a metrics endpoint."""
        self.workers: list[_Worker] = []
        self.stopping = False

    def start(self) -> None:
        """Start every worker and wait until each serves; the first that cannot stops all."""
        for number in range(1, self.settings.workers + 1):
            if self.stopping:
                return
            receiver, sender = _SPAWN.Pipe(duplex=False)
            process = _SPAWN.Process(
                target=worker.run,
                args=(number, self.settings, sender, self.metrics_dir is not None),
                name=f"woolly-grpc worker {number}",
            )
            process.start()
            sender.close()
            self.workers.append(_Worker(number, process, receiver))
        while not self.stopping and (starting := [w for w in self.workers if not w.serving]):
            wait([w.messages for w in starting])  # a message, or EOF when a worker ended
            for w in starting:
                if w.messages.poll():
                    self._started(w)

    def _started(self, w: _Worker) -> None:
        try:
            kind, detail = w.messages.recv()
        except EOFError:  # it ended without a word (a traceback on stderr, or a signal)
            kind, detail = "", ""
        if kind == worker.SERVING:
            w.serving = True
            return
        if self.stopping:  # stopped while it started: not a failure
            return
        w.process.join()
        reason = detail or f"worker {w.number} exited with code {w.process.exitcode} at start-up"
        self.stop(signal.SIGTERM)
        self.wait()
        raise StartupError(reason)

    def forward(self, signum: int, _frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: the first drains every worker, a second one cuts their drain short."""
        if not self.stopping:
            grace = self.settings.shutdown_grace_s
            _log.info("shutting down: %d workers draining for up to %ss", len(self.workers), grace)
        self.stop(signum)

    def stop(self, signum: int) -> None:
        """Send `signum` to every worker still running (each drains as a single server does)."""
        self.stopping = True
        for w in self.workers:
            if w.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signum)

    def wait(self) -> int:
        """Wait until every worker has exited; 1 if one exited unasked or failed, else 0."""
        code = 0
        running = list(self.workers)
        while running:
            wait([w.process.sentinel for w in running])
            for w in [w for w in running if w.process.exitcode is not None]:
                running.remove(w)
                if self.metrics_dir is not None:  # its gauges leave the sums; counters stay
                    multiprocess.mark_process_dead(w.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
                exitcode = w.process.exitcode
                if exitcode == 0 and self.stopping:
                    _log.info("worker %d (pid %d) stopped", w.number, w.pid)
                    continue
                if self.stopping and not w.serving:
                    continue  # a signal found it still starting
                code = 1
                _log.error(
                    "worker %d (pid %d) exited with code %s%s",
                    w.number,
                    w.pid,
                    exitcode,
                    "" if self.stopping else ": stopping the other workers",
                )
                if not self.stopping:  # (a second SIGTERM would cut the others' drain short)
                    self.stop(signal.SIGTERM)
        return code


def _claim_port(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """The port (picked when 0), checked free of other programs, and sockets holding it.

    A plain bind fails when any socket is bound there, SO_REUSEPORT or not: that is the check.
    The sockets that then hold the port set SO_REUSEPORT, which lets the workers (same user,
    SO_REUSEPORT too) and nobody else bind it until they listen.
    """
    try:
        addresses = [
            (family, kind, proto, address[0], address[2:])
            for family, kind, proto, _, address in socket.getaddrinfo(
                host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        ]
        probes = _bind(addresses, port, reuse_port=False)
        port = probes[0].getsockname()[1]
        for sock in probes:
            sock.close()
        return port, _bind(addresses, port, reuse_port=True)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc}") from exc


_Address = tuple[socket.AddressFamily, socket.SocketKind, int, str | int, tuple[int, ...]]
"""family, type, protocol, host, and for IPv6 flow info and scope id."""


def _bind(addresses: Sequence[_Address], port: int, *, reuse_port: bool) -> list[socket.socket]:
    """A socket bound to each address on `port` (the first one's when 0)."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, host, rest in addresses:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc's listeners
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port, *rest))
            port = port or sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@contextlib.contextmanager
def _shared_metrics(settings: Settings) -> Iterator[str | None]:
    """/metrics of all workers together (prometheus-client's multiprocess mode), until exit.

    The workers write their values to files in a directory of their own (inherited as
    PROMETHEUS_MULTIPROC_DIR, which prometheus-client reads when it is imported); this process
    sums them at each scrape. None (and no endpoint) when `metrics_port` is 0.
    """
    if not settings.metrics_port:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="woolly-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # for the workers: spawn inherits it
    address = f"{settings.host}:{settings.metrics_port}"
    try:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        try:
            server, thread = start_http_server(
                settings.metrics_port, settings.host, registry=registry
            )
        except OSError as exc:
            raise StartupError(f"cannot serve /metrics on {address}: {exc}") from exc
        _log.info("metrics of every worker on http://%s/metrics", address)
        try:
            yield directory
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5.0)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
