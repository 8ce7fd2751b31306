"""The query parameters and headers of API v1, each defined once: the routes read them, api.openapi documents them."""

import re
from dataclasses import dataclass

from flask import request

from api.problems import ProblemError, invalid
from shared.response_models import JOB_KINDS, JOB_STATUSES

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit would also take "²"


@dataclass(frozen=True)
class Query:
    """A query parameter: one of `choices`, or a whole number in [low, high]; absent, `default`.

    `description` (for the document) and `expected` (for the 400 of an invalid value) may name the
    fields, as in "{low} to {high}", so that they follow the limits.
    """

    name: str
    description: str
    expected: str
    default: object = None
    choices: tuple[str, ...] | None = None
    low: int = 0
    high: int = 0
    digits_as_text: bool = False  # documented as a string of digits (an opaque cursor), not as an integer

    def read(self):
        """The parameter of the current request, parsed; a 400 naming what was expected when it is invalid."""
        raw = request.args.get(self.name)
        if raw is None:
            return self.default
        value = self._parse(raw)
        if value is None:
            expected = self.expected.format(**vars(self))
            raise bad_parameter(f"/{self.name}", f"{self.name} must be {expected}, not {raw!r}")
        return value

    def _parse(self, raw: str):
        if self.choices is not None:
            return raw if raw in self.choices else None
        return int(raw) if _DIGITS.fullmatch(raw) and self.low <= int(raw) <= self.high else None

    def document(self) -> dict:
        """The parameter as the OpenAPI document describes it."""
        if self.choices is not None:
            schema = {"type": "string", "enum": list(self.choices)}
        elif self.digits_as_text:
            schema = {"type": "string", "pattern": rf"^\d{{1,{len(str(self.high))}}}$"}
        else:
            schema = {"type": "integer", "minimum": self.low, "maximum": self.high}
        description = self.description.format(**vars(self))
        return {"name": self.name, "in": "query", "required": False, "schema": schema, "description": description}


STATUS = Query("status", "only jobs in this status", "one of " + ", ".join(JOB_STATUSES), choices=JOB_STATUSES)
KIND = Query("kind", "only jobs of this kind", " or ".join(JOB_KINDS), choices=JOB_KINDS)
PAGE_LIMIT = Query("limit", "page size ({default})", "a whole number from {low} to {high}", default=20, low=1, high=100)
CURSOR = Query(
    "cursor", "next_cursor of the previous page", "a cursor from a previous page", high=10**18 - 1, digits_as_text=True
)
SINCE = Query("since", "epochs already seen", "a whole number of epochs (0 or more)", default=0, high=999_999_999)
SCALE = Query("scale", "the loss axis ({default})", "linear or log", default="linear", choices=("linear", "log"))


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header; a 400 unless it is 1 to 255 visible ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise bad_parameter("/Idempotency-Key", "Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


def bad_parameter(loc: str, detail: str) -> ProblemError:
    return invalid(400, detail, [{"loc": loc, "msg": detail, "type": "invalid_parameter"}])
