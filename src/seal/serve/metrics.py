"""The server's Prometheus metrics (`/metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only repeat the start time
        self.registry = CollectorRegistry()
        self.requests = Counter("seal_requests", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram("seal_request_seconds", "Request time (until the response starts)", ["path"],
                                 registry=self.registry)
        self.first_token = Histogram("seal_time_to_first_token_seconds", "Streamed chat: time to the first token",
                                     registry=self.registry)
        self.tokens = Counter("seal_tokens", "Tokens processed", ["kind"], registry=self.registry)
        self.adaptations = Counter("seal_adaptations", "Finished adaptations", ["outcome"], registry=self.registry)
        self.queued = Gauge("seal_adaptations_queued", "Adaptations waiting", registry=self.registry)
        self.version = Gauge("seal_current_version", "The version each tenant's model serves (1 for its labels)",
                             ["model", "version"], registry=self.registry)
        self.generations = Counter("seal_generations", "Requests that ended decoding, by finish reason (cancelled: "
                                   "the client went away)", ["finish"], registry=self.registry)
        self.decoding = Gauge("seal_requests_decoding", "Requests in the decoding batch", registry=self.registry)
        self.batch = Histogram("seal_decode_batch_rows", "Requests decoding together, per step",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
