"""One rooted error tree. Raise leaves, catch branches; the CLI turns any of them into one line."""

from __future__ import annotations


class DialerError(Exception):
    """Root of every error the dialer raises on purpose."""


class ConfigurationError(DialerError):
    """Settings or a campaign file that cannot work."""


class NotFound(DialerError):
    """A named campaign (or other record) does not exist."""


class InvalidState(DialerError):
    """The command does not fit the campaign's current status."""


class LeaseLost(DialerError):
    """Another holder took over the campaign a run held (its lease lapsed while it stalled)."""


class DatabaseGone(DialerError):
    """The database has not answered for longer than ``DIALER_DB_OUTAGE_LIMIT``."""


class ImportFailed(DialerError):
    """A contact file that cannot be imported; nothing was written."""


class WriteFailed(DialerError):
    """A file for the operator could not be written; whatever was at its path is as it was."""


class ProviderError(DialerError):
    """A provider refused or did not answer a request."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ProviderSetupError(ProviderError):
    """Nothing will work until an operator fixes the settings: credentials or the API's URL."""


class ProviderAuthError(ProviderSetupError):
    """The provider does not accept our credentials (401/403)."""


class ProviderRateLimited(ProviderError):
    """The provider answered 429; ``retry_after`` is its advice in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None, status_code: int | None = 429) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """5xx or no connection: the call was not placed and may be tried again."""


class ProviderTimeout(ProviderError):
    """The request may have reached the provider but no answer came: never re-dial blindly."""


class ProviderAnswerUnreadable(ProviderError):
    """A 2xx answer that is not what the provider documents (a look-up's, say): logged, not applied."""


class ProviderRejected(ProviderError):
    """A 4xx answer: the provider will not place this call, or (``outcome``) says how a call it
    tried ended before it connected (busy, not answered)."""

    def __init__(self, message: str, *, status_code: int | None = None, outcome: str | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.outcome = outcome


class WebhookError(DialerError):
    """A callback that cannot be accepted."""


class WebhookAuthError(WebhookError):
    """A callback whose signature or token does not check out."""


class WebhookUnsigned(WebhookError):
    """A callback without the signature the settings require: the sender should send it again."""


class WebhookPayloadError(WebhookError):
    """A callback whose body is not what the provider sends."""
