"""The Python client of convq's HTTP API: `Client(base_url).correlate(x, k, wait=5).result.output`.

Self-contained (httpx and numpy only): it imports nothing else of convq.
"""

from client.client import Client
from client.errors import ApiError, ConvqError, ServerUnreachable, StreamEnded, WaitTimeout
from client.models import (
    CorrelationResult,
    Event,
    FieldError,
    Job,
    LossPage,
    NamedKernel,
    Problem,
    Progress,
    ProgressEvent,
    StatusEvent,
    TrainingResult,
)

__all__ = [
    "ApiError",
    "Client",
    "ConvqError",
    "CorrelationResult",
    "Event",
    "FieldError",
    "Job",
    "LossPage",
    "NamedKernel",
    "Problem",
    "Progress",
    "ProgressEvent",
    "ServerUnreachable",
    "StatusEvent",
    "StreamEnded",
    "TrainingResult",
    "WaitTimeout",
]
