"""The hub's figures in the Prometheus text format (HUB.md operations; issue 15): what went
through (uploads, sections, jobs by outcome, logins), how long it took (close to delivery,
gpg calls), and what waits (jobs, sessions, inbox backlog, free space, database size).

One `Metrics` per hub, in a registry of its own (never the library's global one): several
hubs may run in one process (the tests do). Counters are fed where things happen; the
gauges are read when `/metrics` is scraped (`refresh`), so that nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
GPG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)


@dataclass(frozen=True, slots=True)
class State:
    """What the gauges show, read at scrape time."""

    jobs_queued: int = 0
    jobs_running: int = 0
    jobs_waiting: int = 0  # waiting out a fault before their next run
    jobs_quarantined: int = 0
    sessions: int = 0
    banned: int = 0
    backlog_files: Mapping[str, int] = field(default_factory=dict)  # participant class -> files
    backlog_bytes: Mapping[str, int] = field(default_factory=dict)
    free_bytes: int = 0
    database_bytes: int = 0


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.node = Info("bdi_node", "This node (several may share one database)", registry=r)
        self.taken_in = Counter("bdi_uploads_taken_in", "Uploads taken in", registry=r)
        self.uploads_refused = Counter(
            "bdi_uploads_refused", "Uploads refused whole, by code", ["code"], registry=r
        )
        self.sections_delivered = Counter(
            "bdi_sections_delivered", "Sections delivered", registry=r
        )
        self.sections_refused = Counter(
            "bdi_sections_refused", "Sections refused, by code", ["code"], registry=r
        )
        self.jobs = Counter("bdi_jobs", "Jobs ended, by outcome", ["outcome"], registry=r)
        self.job_failures = Counter(
            "bdi_job_failures", "Runs of a job the hub failed, by kind", ["fault"], registry=r
        )
        self.quarantines = Counter("bdi_jobs_quarantined", "Jobs set aside", registry=r)
        self.latency = Histogram(
            "bdi_delivery_latency_seconds", "From the upload's close to its job's end",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.gpg = Histogram(
            "bdi_gpg_seconds", "gpg calls, by operation", ["op"], buckets=GPG_BUCKETS, registry=r
        )
        self.logins = Counter(
            "bdi_logins", "Logins, by front-end, method and outcome",
            ["front", "method", "outcome"], registry=r,
        )  # fmt: skip
        self.bans = Counter("bdi_bans", "Addresses banned by the defender", registry=r)
        self.ssh_refused = Counter(
            "bdi_ssh_refused", "SSH connections refused at the door, by reason", ["reason"],
            registry=r,
        )  # fmt: skip
        self._gauges(r)

    def _gauges(self, r: CollectorRegistry) -> None:
        self.queue = Gauge("bdi_jobs_in_hub", "Jobs in the hub, by state", ["state"], registry=r)
        self.sessions = Gauge("bdi_sftp_sessions", "SFTP sessions logged in", registry=r)
        self.banned = Gauge("bdi_banned_addresses", "Addresses banned now", registry=r)
        self.backlog_files = Gauge(
            "bdi_inbox_backlog_files", "Files waiting in inboxes, by participant class",
            ["participant_class"], registry=r,
        )  # fmt: skip
        self.backlog_bytes = Gauge(
            "bdi_inbox_backlog_bytes", "Bytes waiting in inboxes, by participant class",
            ["participant_class"], registry=r,
        )  # fmt: skip
        self.free = Gauge("bdi_data_free_bytes", "Free space of the data folder", registry=r)
        self.database = Gauge("bdi_database_bytes", "Size of the SQLite database", registry=r)

    # -- fed where things happen -----------------------------------------------------------
    def refused(self, codes: Iterable[str]) -> None:
        for code in set(codes) or {"?"}:
            self.uploads_refused.labels(code).inc()

    def sections(self, delivered: int, refused_codes: Iterable[Iterable[str]]) -> None:
        self.sections_delivered.inc(delivered)
        for codes in refused_codes:
            for code in set(codes):
                self.sections_refused.labels(code).inc()

    def job_done(self, outcome: str, latency_s: float) -> None:
        self.jobs.labels(outcome).inc()
        self.latency.observe(max(0.0, latency_s))

    def login(self, front: str, method: str, ok: bool) -> None:
        self.logins.labels(front, method, "ok" if ok else "failed").inc()

    # -- read at scrape time -----------------------------------------------------------------
    def refresh(self, state: State) -> None:
        for name in ("queued", "running", "waiting", "quarantined"):
            self.queue.labels(name).set(getattr(state, f"jobs_{name}"))
        self.sessions.set(state.sessions)
        self.banned.set(state.banned)
        for gauge, values in ((self.backlog_files, state.backlog_files),
                              (self.backlog_bytes, state.backlog_bytes)):  # fmt: skip
            gauge.clear()
            for participant_class, value in values.items():
                gauge.labels(participant_class).set(value)
        self.free.set(state.free_bytes)
        self.database.set(state.database_bytes)

    def text(self) -> bytes:
        return generate_latest(self.registry)
