"""What the client raises: the API refused or failed a request, or the server could not be reached.

A job that failed is not an error here: it is a job whose status is "failed"
and whose `error` is the problem.
"""

from client.models import Problem


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
