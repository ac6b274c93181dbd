"""Domain errors with stable codes.

Every failure a user can meet is a SparkError subclass carrying a code that never changes; the
HTTP layer and the CLI each map codes to statuses or exit codes in exactly one place. Code never
matches on message text.
"""

from __future__ import annotations

from dataclasses import dataclass


class SparkError(Exception):
    """Base of all sparkctl errors. `code` is stable and machine-readable."""

    code: str = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a file: where (file, dotted field path) and what."""

    path: str
    field: str
    message: str

    def __str__(self) -> str:
        if self.field:
            return f"{self.path}: {self.field}: {self.message}"
        return f"{self.path}: {self.message}"


class InvalidFilesError(SparkError):
    """A set of files failed validation; `issues` holds one entry per precise problem."""

    def __init__(self, issues: list[Issue], *, what: str) -> None:
        self.issues = issues
        n = len(issues)
        lines = "\n".join(str(i) for i in issues)
        super().__init__(f"{what}: {n} error{'s' if n != 1 else ''}\n{lines}")


class CatalogError(InvalidFilesError):
    code = "catalog_invalid"

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues, what="invalid catalog")


class ConfigError(InvalidFilesError):
    code = "config_invalid"

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues, what="invalid configuration")


class UnknownModelError(SparkError):
    code = "model_not_found"


class ModelDisabledError(SparkError):
    code = "model_disabled"


class InvalidModelNameError(SparkError):
    code = "invalid_model_name"


class RenderError(SparkError):
    code = "render_failed"


class ToolMissingError(SparkError):
    """An external program sparkctl would run (quadlet, systemd-analyze, podman) is not installed."""

    code = "tool_missing"


class SandboxError(SparkError):
    """The throwaway systemd used by the tests and the demo could not be set up or driven."""

    code = "sandbox_failed"


class RetryableError(SparkError):
    """An error a client may retry later; `retry_after` (seconds) becomes a Retry-After header."""

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class ModelStartFailedError(RetryableError):
    code = "model_start_failed"


class ModelStartTimeoutError(RetryableError):
    code = "model_start_timeout"


class ModelBackoffError(RetryableError):
    code = "model_backoff"


class ModelLoadingError(RetryableError):
    """The client asked not to wait (`Prefer: wait=0`) and the model is not ready."""

    code = "model_loading"


class QueueFullError(RetryableError):
    code = "queue_full"


class UpstreamError(SparkError):
    """The engine failed while serving: it died, or it was stopped under the request."""

    code = "upstream_error"


class InvalidJSONError(SparkError):
    code = "invalid_json"


class MissingModelError(SparkError):
    code = "missing_model"


class RequestTooLargeError(SparkError):
    code = "request_too_large"


class UnauthorizedError(SparkError):
    code = "unauthorized"


class ForbiddenError(SparkError):
    code = "forbidden"


class ContextLengthExceededError(SparkError):
    """The engine refused the prompt: prompt plus completion exceed the model's context."""

    code = "context_length_exceeded"


class NotFoundError(SparkError):
    """No such route (not a model: that is UnknownModelError)."""

    code = "not_found"


class BadRequestError(SparkError):
    """A request the engine (or the gateway) refused for another reason than those above."""

    code = "bad_request"


class RequestTimeoutError(SparkError):
    """The client did not send its request body in time."""

    code = "request_timeout"
