"""Prometheus metrics on one CollectorRegistry per app (never the global one): `mirror_` prefix,
base units, bounded labels only (never a repository name or a digest)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from mirror import __version__

FILL_FAILURE_REASONS = (
    "digest_mismatch",
    "size_mismatch",
    "upstream_error",
    "disk",
    "shutdown",
    "abandoned",
    "internal",
)
AUTH_FAILURE_REASONS = ("missing", "malformed", "wrong")
#: How a ranged side stream of a fill went: opened and writing, refused (no 206 for its window),
#: failed mid-way (the main stream covers the rest), or not started because a limit was reached.
RANGE_STREAM_RESULTS = ("started", "refused", "failed", "limited")
#: Why a blob was streamed from upstream without being stored (`storage/room.py`).
PASSTHROUGH_REASONS = ("too_large", "cache_full", "disk_full", "disk_error")
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "5xx", "429")
#: Who re-hashes stored blobs: their first serve after start-up, or the background scrubber.
REHASHERS = ("serve", "scrub")
REDIS_OUTCOMES = ("ok", "error", "skipped")
#: Where a shared-mode fill got its bytes: a peer holding the blob, the peer filling it, or upstream.
CLUSTER_SOURCES = ("held", "filling", "upstream")
PEER_FAILURE_REASONS = ("unreachable", "refused", "broken", "digest_mismatch", "size_mismatch")
PEER_SERVED_RESULTS = ("store", "fill", "missing", "unauthorized")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Every metric the mirror exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mirror_requests",
            "Client requests by endpoint kind, method, status and cache result",
            ["upstream", "kind", "method", "status", "result"],
            registry=r,
        )
        self.request_duration = Histogram(
            "mirror_request_duration_seconds",
            "Time from request to the last byte of the response",
            ["kind", "result"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_byte = Histogram(
            "mirror_time_to_first_byte_seconds",
            "Time from request to the response headers (a miss answers as soon as upstream does)",
            ["kind", "result"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_served = Counter(
            "mirror_bytes_served",
            "Body bytes sent to clients, by where they came from",
            ["upstream", "source"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "mirror_upstream_requests",
            "Requests sent upstream, by endpoint and status (status 'error' for no answer)",
            ["upstream", "endpoint", "status"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "mirror_upstream_request_duration_seconds",
            "Time until the upstream answered with headers, by endpoint and status ('error': no answer)",
            ["upstream", "endpoint", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_bytes = Counter(
            "mirror_upstream_bytes_received",
            "Blob body bytes received from upstream",
            ["upstream"],
            registry=r,
        )
        self.refused = Counter(
            "mirror_refused_requests",
            "Client requests for a repository the allow and deny lists refuse (no upstream request)",
            ["upstream", "kind"],
            registry=r,
        )
        self.client_authorizations = Counter(
            "mirror_client_authorizations",
            "Decisions whether a client may pull a repository of an upstream in client mode, by decision "
            "(allowed, or the error code) and source (cache: remembered; upstream: a HEAD asked)",
            ["upstream", "decision", "source"],
            registry=r,
        )
        self.token_fetches = Counter(
            "mirror_token_fetches",
            "Bearer token requests sent to token realms, by outcome",
            ["upstream", "outcome"],
            registry=r,
        )
        self.fills_in_flight = Gauge(
            "mirror_fills_in_flight", "Blob downloads from upstream under way", registry=r
        )
        self.fill_readers = Counter(
            "mirror_fill_readers_joined",
            "Client requests that joined a blob download already under way",
            registry=r,
        )
        self.fill_failures = Counter(
            "mirror_fill_failures",
            "Blob downloads that ended without a committed blob, by reason",
            ["reason"],
            registry=r,
        )
        self.blob_corrupt = Counter(
            "mirror_blob_corrupt",
            "Stored blobs whose bytes no longer hash to their digest, dropped from the store, by who "
            "found them (serve: its first serve after start-up; scrub: the background scrubber)",
            ["by"],
            registry=r,
        )
        self.rehashed_bytes = Counter(
            "mirror_blob_rehashed_bytes",
            "Bytes of stored blobs re-hashed to check them (serve: first serves after start-up; "
            "scrub: the background scrubber)",
            ["by"],
            registry=r,
        )
        self.fill_resumes = Counter(
            "mirror_fill_resumes",
            "Blob downloads resumed with Range after the upstream body broke off",
            registry=r,
        )
        self.range_streams = Counter(
            "mirror_fill_range_streams",
            "Ranged side streams of blob downloads, by result (started, refused, failed, limited)",
            ["result"],
            registry=r,
        )
        self.range_bytes = Counter(
            "mirror_fill_range_bytes",
            "Bytes ranged side streams fetched ahead of their download's main stream",
            registry=r,
        )
        self.upstream_errors = Counter(
            "mirror_upstream_errors",
            "Upstream failures by kind: connect, timeout, 5xx, 429 (as the circuit breaker counts them)",
            ["upstream", "kind"],
            registry=r,
        )
        self.ratelimit_limit = Gauge(
            "mirror_upstream_ratelimit_limit",
            "Manifest pull budget per window the upstream last announced (ratelimit-limit)",
            ["upstream"],
            registry=r,
        )
        self.ratelimit_remaining = Gauge(
            "mirror_upstream_ratelimit_remaining",
            "Manifest pulls the upstream last said remain in the window (ratelimit-remaining)",
            ["upstream"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "mirror_upstream_breaker_state",
            "Circuit breaker per upstream: 0 closed (healthy), 1 half-open (probing), 2 open (down)",
            ["upstream"],
            registry=r,
        )
        self.blob_transfers = Counter(
            "mirror_blob_transfers",
            "Blob downloads by transport: threaded (a transfer thread each) or session (the event loop, "
            "once max_transfers threads are busy)",
            ["transport"],
            registry=r,
        )
        self.connections = Gauge("mirror_connections", "Open client connections", registry=r)
        self.connections_refused = Counter(
            "mirror_connections_refused",
            "Client connections answered 503 at once because max_connections were open",
            registry=r,
        )
        self.open_files_exhausted = Counter(
            "mirror_open_files_exhausted",
            "Accepts that failed for lack of file descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM)",
            registry=r,
        )
        self.cache_size = Gauge("mirror_cache_size_bytes", "Bytes held by the blob store", registry=r)
        self.cache_free = Gauge(
            "mirror_cache_free_bytes", "Bytes free for the mirror on the cache filesystem", registry=r
        )
        self.cache_limit = Gauge("mirror_cache_limit_bytes", "Configured bound of the blob store", registry=r)
        self.cache_entries = Gauge("mirror_cache_entries", "Blobs held by the blob store", registry=r)
        self.evictions = Counter(
            "mirror_cache_evictions", "Blobs evicted to keep the store under its limit", registry=r
        )
        self.evicted_bytes = Counter(
            "mirror_cache_evicted_bytes", "Bytes evicted to keep the store under its limit", registry=r
        )
        self.cache_reserved = Gauge(
            "mirror_cache_reserved_bytes",
            "Bytes reserved in the blob store by downloads under way (counted against cache_max_bytes)",
            registry=r,
        )
        self.blob_passthrough = Counter(
            "mirror_blob_passthrough",
            "Blob answers streamed from upstream without being stored, by why the blob was not stored",
            ["reason"],
            registry=r,
        )
        self.pinned_bytes = Gauge(
            "mirror_cache_pinned_bytes", "Bytes of blobs held by pinned images (never evicted)", registry=r
        )
        self._cluster(r)
        self.tls_reloads = Counter(
            "mirror_tls_reloads",
            "Reloads of the listener's certificate after its files changed, by outcome (ok, error)",
            ["outcome"],
            registry=r,
        )
        self.auth_failures = Counter(
            "mirror_auth_failures",
            "Client requests refused for credentials: missing, malformed, or wrong (bad user or password)",
            ["reason"],
            registry=r,
        )
        self.auth_checks = Counter(
            "mirror_auth_checks",
            "Credential checks by how they were answered: cached (no hashing), verified (bcrypt ran), token",
            ["outcome"],
            registry=r,
        )
        self.auth_reloads = Counter(
            "mirror_auth_reloads",
            "Reloads of the htpasswd or tokens file after it changed, by outcome (ok, error)",
            ["outcome"],
            registry=r,
        )
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        for reason in FILL_FAILURE_REASONS:  # present at 0, so increase() sees the first failure
            self.fill_failures.labels(reason)
        for result in RANGE_STREAM_RESULTS:
            self.range_streams.labels(result)
        for reason in PASSTHROUGH_REASONS:
            self.blob_passthrough.labels(reason)
        for by in REHASHERS:
            self.blob_corrupt.labels(by)
            self.rehashed_bytes.labels(by)
        self.build = Info(
            "mirror_build", "Version and git revision of the mirror, version of Python", registry=r
        )

    def set_build(self, revision: str) -> None:
        """Fill `mirror_build_info` (the revision comes from git or a file: read off the event loop)."""
        self.build.info({"version": __version__, "revision": revision, "python": platform.python_version()})

    def _cluster(self, r: CollectorRegistry) -> None:
        """The shared mode's metrics (Redis, peers, leases); at 0 on a replica without Redis."""
        self.redis_operations = Counter(
            "mirror_redis_operations",
            "Redis operations by name and outcome (skipped: the Redis breaker was open)",
            ["op", "outcome"],
            registry=r,
        )
        self.redis_duration = Histogram(
            "mirror_redis_operation_duration_seconds",
            "Time of successful Redis operations",
            ["op"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_breaker_state = Gauge(
            "mirror_redis_breaker_state",
            "Circuit breaker on Redis: 0 closed, 1 half-open (probing), 2 open (Redis unreachable)",
            registry=r,
        )
        self.cluster_fills = Counter(
            "mirror_cluster_fills",
            "Shared-mode blob fills by where their bytes came from (filling: coalesced with another replica)",
            ["source"],
            registry=r,
        )
        self.peer_requests = Counter(
            "mirror_peer_requests",
            "Blob requests sent to peer replicas, by whether the peer held the blob or was filling it",
            ["source"],
            registry=r,
        )
        self.peer_bytes = Counter(
            "mirror_peer_bytes_received", "Blob bytes received from peer replicas", registry=r
        )
        self.peer_failures = Counter(
            "mirror_peer_failures",
            "Peer blob requests that failed, by reason (the peer is dropped from the hints)",
            ["reason"],
            registry=r,
        )
        self.peer_served = Counter(
            "mirror_peer_served",
            "Blob requests from peer replicas answered, by result",
            ["result"],
            registry=r,
        )
        self.peer_served_bytes = Counter(
            "mirror_peer_served_bytes", "Blob bytes sent to peer replicas", registry=r
        )
        self.manifests_from_replicas = Counter(
            "mirror_manifests_from_replicas",
            "Manifest fetches another replica made for this one (it waited for the result in Redis)",
            registry=r,
        )
        self.lease_waits = Histogram(
            "mirror_lease_wait_seconds",
            "Time a fill waited for the lease of a filling replica that did not answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        for source in CLUSTER_SOURCES:
            self.cluster_fills.labels(source)
        for source in ("held", "filling"):
            self.peer_requests.labels(source)
        for reason in PEER_FAILURE_REASONS:
            self.peer_failures.labels(reason)
        for result in PEER_SERVED_RESULTS:
            self.peer_served.labels(result)
