"""Every domain error sparkctl raises, and the one table of what each code means outside.

A failure a user can meet is a `SparkError` subclass with a stable `ErrorCode`. The code carries
what it becomes at each edge: an HTTP status and OpenAI error type (the gateway's envelope, BRIEF
§4.5) and a CLI exit code (BRIEF §4.4: 1 failure, 2 usage). The gateway and the CLI each read it
in exactly one place (gateway/errors.py, cli/app.py); nothing matches on message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """A stable, machine-readable error code with its HTTP status, OpenAI error type and exit code.
    Codes without an HTTP meaning of their own (configuration, tools) answer 500 if one ever
    reaches the gateway."""

    status: int
    error_type: str
    exit_code: int

    def __new__(
        cls, code: str, status: int = 500, error_type: str = "server_error", exit_code: int = 1
    ) -> ErrorCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        member.error_type = error_type
        member.exit_code = exit_code
        return member

    # requests (BRIEF §4.5)
    INVALID_JSON = "invalid_json", 400, "invalid_request_error"
    MISSING_MODEL = "missing_model", 400, "invalid_request_error"
    INVALID_MODEL_NAME = "invalid_model_name", 400, "invalid_request_error"
    MODEL_DISABLED = "model_disabled", 400, "invalid_request_error"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded", 400, "invalid_request_error"
    ROUTE_NOT_SUPPORTED = "route_not_supported", 400, "invalid_request_error"
    MODEL_TOO_LARGE = "model_too_large", 400, "invalid_request_error"
    BAD_REQUEST = "bad_request", 400, "invalid_request_error"
    UNAUTHORIZED = "unauthorized", 401, "authentication_error"
    FORBIDDEN = "forbidden", 403, "permission_error"
    MODEL_NOT_FOUND = "model_not_found", 404, "invalid_request_error"
    NOT_FOUND = "not_found", 404, "invalid_request_error"
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "invalid_request_error"
    REQUEST_TIMEOUT = "request_timeout", 408, "invalid_request_error"
    REQUEST_TOO_LARGE = "request_too_large", 413, "invalid_request_error"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415, "invalid_request_error"
    QUEUE_FULL = "queue_full", 429, "rate_limit_error"
    UPSTREAM_ERROR = "upstream_error", 502, "server_error"
    MODEL_START_FAILED = "model_start_failed", 503, "server_error"
    MODEL_BACKOFF = "model_backoff", 503, "server_error"
    MODEL_LOADING = "model_loading", 503, "server_error"
    MODEL_START_TIMEOUT = "model_start_timeout", 504, "server_error"
    PEER_UNAVAILABLE = "peer_unavailable", 503, "server_error"  # BRIEF §9: the node serving it is gone
    # #15: a reservation of this node for a model another node owns, refused (held by another
    # node, or not a model this node runs a worker of), or a worker part asked for without one
    RESERVATION_REFUSED = "reservation_refused", 409, "invalid_request_error"
    INTERNAL_ERROR = "internal_error"
    # files and configuration
    CATALOG_INVALID = "catalog_invalid"
    CONFIG_INVALID = "config_invalid"
    API_KEYS_INVALID = "api_keys_invalid"
    API_KEYS_WRITE_FAILED = "api_keys_write_failed"
    KEY_EXISTS = "key_exists"
    KEY_NOT_FOUND = "key_not_found"
    INVALID_KEY_NAME = "invalid_key_name", 400, "invalid_request_error", 2
    RENDER_FAILED = "render_failed"
    IMAGE_INDEX_INVALID = "image_index_invalid"
    # systemd and the host
    SYSTEMD_ERROR = "systemd_error"
    UNIT_NOT_FOUND = "unit_not_found"
    ACCESS_DENIED = "access_denied"
    BUS_UNAVAILABLE = "bus_unavailable"
    TOOL_MISSING = "tool_missing"
    SANDBOX_FAILED = "sandbox_failed"
    # operator tools and the admin API's client
    INSTALL_FAILED = "install_failed"
    IMAGES_FAILED = "images_failed"
    PODMAN_UNAVAILABLE = "podman_unavailable"
    PULL_FAILED = "pull_failed"
    IMAGE_MISSING = "image_missing"
    DEMO_FAILED = "demo_failed"
    DAEMON_UNAVAILABLE = "daemon_unavailable"
    API_ERROR = "api_error"

    @classmethod
    def parse(cls, code: str) -> ErrorCode:
        """The member for a code another sparkctl sent (API_ERROR for one this version lacks)."""
        member = cls._value2member_map_.get(code)
        return member if isinstance(member, ErrorCode) else cls.API_ERROR


class SparkError(Exception):
    """Base of all sparkctl errors. `code` is stable and machine-readable."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

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
    code = ErrorCode.CATALOG_INVALID

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues, what="invalid catalog")


class ConfigError(InvalidFilesError):
    code = ErrorCode.CONFIG_INVALID

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues, what="invalid configuration")


class KeyFileError(InvalidFilesError):
    """The key file cannot be read or is not a valid key file; one Issue per problem."""

    code = ErrorCode.API_KEYS_INVALID

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues, what="invalid API key file")


class ImageIndexError(InvalidFilesError):
    code = ErrorCode.IMAGE_INDEX_INVALID

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues, what="invalid image index")


# ------------------------------------------------------------------------------------- requests
class UnknownModelError(SparkError):
    code = ErrorCode.MODEL_NOT_FOUND


class ModelDisabledError(SparkError):
    code = ErrorCode.MODEL_DISABLED


class RouteNotSupportedError(SparkError):
    """The model cannot serve the route (BRIEF §9): refused before anything starts or stops."""

    code = ErrorCode.ROUTE_NOT_SUPPORTED


class ModelTooLargeError(SparkError):
    """The model can never fit this host's memory budget: refused before anything is evicted
    (a 4xx, so clients do not retry what cannot succeed)."""

    code = ErrorCode.MODEL_TOO_LARGE


class InvalidModelNameError(SparkError):
    code = ErrorCode.INVALID_MODEL_NAME


class InvalidJSONError(SparkError):
    code = ErrorCode.INVALID_JSON


class MissingModelError(SparkError):
    code = ErrorCode.MISSING_MODEL


class RequestTooLargeError(SparkError):
    code = ErrorCode.REQUEST_TOO_LARGE


class RequestTimeoutError(SparkError):
    """The client did not send its request body in time."""

    code = ErrorCode.REQUEST_TIMEOUT


class UnsupportedMediaTypeError(SparkError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class UnauthorizedError(SparkError):
    code = ErrorCode.UNAUTHORIZED


class ForbiddenError(SparkError):
    code = ErrorCode.FORBIDDEN


class NotFoundError(SparkError):
    """No such route (not a model: that is UnknownModelError)."""

    code = ErrorCode.NOT_FOUND


class BadRequestError(SparkError):
    """A request the engine (or the gateway) refused for another reason than those above."""

    code = ErrorCode.BAD_REQUEST


class ContextLengthExceededError(SparkError):
    """The engine refused the prompt: prompt plus completion exceed the model's context."""

    code = ErrorCode.CONTEXT_LENGTH_EXCEEDED


class UpstreamError(SparkError):
    """The engine failed while serving: it died, or it was stopped under the request."""

    code = ErrorCode.UPSTREAM_ERROR


class RetryableError(SparkError):
    """An error a client may retry later; `retry_after` (seconds) becomes a Retry-After header."""

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class ModelStartFailedError(RetryableError):
    code = ErrorCode.MODEL_START_FAILED


class ModelStartTimeoutError(RetryableError):
    code = ErrorCode.MODEL_START_TIMEOUT


class ModelBackoffError(RetryableError):
    code = ErrorCode.MODEL_BACKOFF


class ModelLoadingError(RetryableError):
    """The client asked not to wait (`Prefer: wait=0`) and the model is not ready."""

    code = ErrorCode.MODEL_LOADING


class QueueFullError(RetryableError):
    code = ErrorCode.QUEUE_FULL


class PeerUnavailableError(RetryableError):
    """The cluster node that serves the model does not answer (BRIEF §9, #15)."""

    code = ErrorCode.PEER_UNAVAILABLE


# ------------------------------------------------------------------------------------- API keys
class ReservationError(SparkError):
    """A node's reservation for a spanning model (#15) refused, or a worker part of one asked
    for outside a reservation."""

    code = ErrorCode.RESERVATION_REFUSED


class KeyFileWriteError(SparkError):
    code = ErrorCode.API_KEYS_WRITE_FAILED


class KeyExistsError(SparkError):
    code = ErrorCode.KEY_EXISTS


class KeyNotFoundError(SparkError):
    code = ErrorCode.KEY_NOT_FOUND


class InvalidKeyNameError(SparkError):
    code = ErrorCode.INVALID_KEY_NAME


# ------------------------------------------------------------------------------ systemd and host
class SystemdError(SparkError):
    code = ErrorCode.SYSTEMD_ERROR


class UnitNotFoundError(SystemdError):
    code = ErrorCode.UNIT_NOT_FOUND


class AccessDeniedError(SystemdError):
    code = ErrorCode.ACCESS_DENIED


class BusUnavailableError(SystemdError):
    code = ErrorCode.BUS_UNAVAILABLE


class RenderError(SparkError):
    code = ErrorCode.RENDER_FAILED


class ToolMissingError(SparkError):
    """An external program sparkctl would run (quadlet, systemd-analyze, podman) is not installed."""

    code = ErrorCode.TOOL_MISSING


class SandboxError(SparkError):
    """The throwaway systemd used by the tests and the demo could not be set up or driven."""

    code = ErrorCode.SANDBOX_FAILED


# ------------------------------------------------------------------------------- operator tools
class InstallError(SparkError):
    code = ErrorCode.INSTALL_FAILED


class ImagesError(SparkError):
    code = ErrorCode.IMAGES_FAILED


class PodmanUnavailableError(SparkError):
    code = ErrorCode.PODMAN_UNAVAILABLE


class PullError(SparkError):
    code = ErrorCode.PULL_FAILED


class ImageMissingError(SparkError):
    code = ErrorCode.IMAGE_MISSING


class DemoError(SparkError):
    code = ErrorCode.DEMO_FAILED


class DaemonUnavailableError(SparkError):
    code = ErrorCode.DAEMON_UNAVAILABLE


class ApiError(SparkError):
    """The daemon answered an admin API call with an error envelope."""

    code = ErrorCode.API_ERROR

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = ErrorCode.parse(code)
