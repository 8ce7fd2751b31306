"""JSON values as the request models check them: strict numbers, whole numbers, and faults with locations."""

from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AllowInfNan, BeforeValidator, Strict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

FLOAT32_MAX = 3.4028234663852886e38


def _json_integer(value: Any) -> Any:
    """Let pydantic's int accept 3 and 3.0 (both JSON integers) but not "3" or true."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be an integer")
    return value


# A matrix element: a JSON number that fits in float32, the dtype the core computes in.
Number = Annotated[float, Strict(), AllowInfNan(False), Ge(-FLOAT32_MAX), Le(FLOAT32_MAX)]


def whole(*constraints: Any) -> Any:
    """A JSON integer with these constraints (Ge, Le). They go inside, before the validator: put on the outside,
    pydantic writes them into the JSON Schema as its own `ge` and `le`, which no schema reader knows."""
    return Annotated[int, *constraints, BeforeValidator(_json_integer)]


def fault(loc: tuple[str | int, ...], kind: str, message: str, value: Any = None) -> InitErrorDetails:
    """Describe one fault at `loc` (relative to the value being validated)."""
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def invalid(title: str, *faults: InitErrorDetails) -> ValidationError:
    """Bundle faults into the ValidationError pydantic reports; raised from validators, it keeps their locations."""
    return ValidationError.from_exception_data(title, list(faults))
