"""Talking to providers: tokens signed in, cached until shortly before they expire, renewed on 401."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import httpx

from dialer.errors import (
    ProviderAnswerUnreadable,
    ProviderAuthError,
    ProviderTimeout,
    ProviderUnavailable,
    WebhookPayloadError,
)
from dialer.providers.base import CallEvent, CallOrder, Provider, send

RENEW_BEFORE = 60.0
"""Seconds before a token's expiry when it is renewed rather than used."""


@contextmanager
def _not_a_call() -> Iterator[None]:
    """A request that places no call (sign-in, set-up): a timeout there is safe to retry."""
    try:
        yield
    except ProviderTimeout as error:
        raise ProviderUnavailable(str(error)) from None


class ProviderClient:
    """Sends every provider request of one process through one HTTP client."""

    def __init__(self, http: httpx.Client, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._prepared: set[tuple[str, str]] = set()

    def _token(self, provider: Provider, settings: Any, *, renew: bool = False) -> str | None:
        if provider.sign_in is None or provider.parse_sign_in is None:
            return None
        with self._lock:
            held = self._tokens.get(provider.name)
            if held and not renew and held[1] - RENEW_BEFORE > self._clock():
                return held[0]
            with _not_a_call():
                token = provider.parse_sign_in(send(self.http, provider.sign_in(settings), provider=provider))
            self._tokens[provider.name] = (token.value, self._clock() + token.lifetime)
            return token.value

    def _send(
        self,
        provider: Provider,
        settings: Any,
        build: Callable[[str | None], httpx.Request],
        pace: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> httpx.Response:
        """Build, then send inside ``pace()``: it is entered once the request is built, so nothing
        but the send follows it, and left when the answer came back (or none will)."""

        def go(token: str | None) -> httpx.Response:
            request = build(token)
            with pace():
                return send(self.http, request, provider=provider)

        try:
            return go(self._token(provider, settings))
        except ProviderAuthError:
            if provider.sign_in is None:
                raise
            # The token may have been revoked or expired early: sign in again, once.
            return go(self._token(provider, settings, renew=True))

    def prepare(self, provider: Provider, settings: Any, *, callback_url: str, caller_id: str) -> None:
        """Register account-level callbacks once per process and caller ID (where the provider needs it)."""
        if provider.setup is None or (provider.name, caller_id) in self._prepared:
            return
        setup = provider.setup
        with _not_a_call():
            self._send(provider, settings, lambda token: setup(settings, callback_url, token, caller_id))
        self._prepared.add((provider.name, caller_id))

    def try_credentials(self, provider: Provider, settings: Any) -> str | None:
        """Make one authenticated request that places no call and say which (None: the provider has
        no such request); raise what the provider answered (:class:`ProviderAuthError`: refused)."""
        if provider.probe is not None:
            probe = provider.probe
            with _not_a_call():
                request = self._send(provider, settings, lambda token: probe(settings, token)).request
        elif provider.sign_in is not None:
            self._token(provider, settings, renew=True)
            request = provider.sign_in(settings)
        else:
            return None
        return f"{request.method} {request.url.copy_with(query=None)}"

    def place(
        self,
        provider: Provider,
        settings: Any,
        order: CallOrder,
        *,
        pace: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> str:
        """Ask the provider to place one call; return its call id.

        ``pace`` holds the account's rate limit: entered once the request is built, it waits until
        the request may leave, and it is left when the answer came back.
        """
        response = self._send(
            provider, settings, lambda token: provider.build_call(order, settings, token), pace
        )
        return provider.parse_call(response, settings)

    def look_up(
        self,
        provider: Provider,
        settings: Any,
        call_id: str,
        *,
        pace: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> CallEvent:
        """Ask the provider how a call stands (only for providers with a status look-up)."""
        assert provider.build_lookup is not None and provider.parse_lookup is not None
        build = provider.build_lookup
        response = self._send(provider, settings, lambda token: build(call_id, settings, token), pace)
        try:
            return provider.parse_lookup(response)
        except (WebhookPayloadError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ProviderAnswerUnreadable(
                f"{provider.title} answered a status look-up with something unexpected ({error!r}):"
                f" {response.text[:200]}"
            ) from None
