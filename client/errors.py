"""What the client raises: the API refused or failed a request, the server could not be reached, or a wait ran out.

Every error the client raises is a ConvqError:

    ConvqError
    ├── ApiError             the API answered 4xx or 5xx; `problem` is its RFC 9457 body
    ├── ServerUnreachable    no answer: the connection was refused, broke, or timed out
    ├── WaitTimeout          the job had not finished when a wait's timeout ran out (also a TimeoutError)
    └── StreamEnded          a job's event stream ended without its status event (a server that breaks the protocol)

A job that failed is not an error here: it is a job whose status is "failed"
and whose `error` is the problem.
"""

from client.models import Problem

__all__ = ["ApiError", "ConvqError", "ServerUnreachable", "StreamEnded", "WaitTimeout"]


class ConvqError(Exception):
    """Base of the client's errors."""


class ApiError(ConvqError):
    """The API answered 4xx or 5xx; `problem` is its RFC 9457 body (or one made from the status line)."""

    def __init__(self, problem: Problem):
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem

    @property
    def status(self) -> int:
        return self.problem.status


class ServerUnreachable(ConvqError):
    """No answer: the connection was refused, broke, or timed out."""


class WaitTimeout(ConvqError, TimeoutError):
    """The job had not finished when the wait's timeout ran out; it may still finish (a TimeoutError too)."""


class StreamEnded(ConvqError):
    """A job's event stream ended without the status event that always ends it."""
