"""The provider simulators: one module per provider, each written from its provider's published
contract (not from our adapter, which it must catch out), and throwaway credentials to run them.

``base`` holds what every simulator shares: the simulated callees, the rate limit, callbacks that
are retried like a provider retries them, and the ``/_simulator/*`` endpoints tests and benches read.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette

from dialer.errors import ConfigurationError
from dialer.settings import Settings
from dialer.simulators import cequens, cm, fractel, routee, vonage
from dialer.simulators.base import Simulation

_MODULES: dict[str, Any] = {
    "vonage": vonage,
    "cm": cm,
    "routee": routee,
    "cequens": cequens,
    "fractel": fractel,
}


def simulator_app(
    provider: str,
    settings: Settings,
    *,
    rate_limit: float | None = None,
    time_scale: float = 0.1,
    readings: Mapping[str, str] | None = None,
) -> Starlette:
    """A simulator for ``provider`` that accepts the credentials in ``settings``, limited to
    ``rate_limit`` requests per second (default: the account's setting, else the documented limit),
    reading its documents as ``readings`` say where they can be read two ways."""
    kind = provider.partition(".")[0]  # another account of a provider has the same simulator
    module = _MODULES.get(kind)
    if module is None:
        raise ConfigurationError(f"no simulator for {provider!r} (known: {', '.join(sorted(_MODULES))})")
    credentials = settings.provider_settings(provider)
    limit = rate_limit or credentials.rate_limit or module.DOCUMENTED_LIMIT
    simulation = Simulation(
        provider=kind,
        rate_limit=limit,
        time_scale=time_scale,
        readings=dict(readings or {}),
    )
    try:
        app: Starlette = module.create_app(simulation, credentials)
    except ValueError as error:
        raise ConfigurationError(f"the {provider} simulator cannot start: {error}") from None
    app.state.simulation = simulation
    return app


def simulator_urls(provider: str, url: str) -> dict[str, str]:
    """The settings that point ``provider`` at its simulator at ``url`` (Routee's token host too)."""
    urls = {"base_url": url}
    if provider.partition(".")[0] == "routee":
        urls["auth_url"] = url  # the simulator also plays Routee's separate OAuth2 host
    return urls


def dev_credentials() -> dict[str, dict[str, str]]:
    """Fresh local-only credentials for every provider, as nested settings values."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "vonage": {
            "application_id": str(uuid.uuid4()),
            "private_key": pem,
            "signature_secret": secrets.token_hex(32),
            "api_key": secrets.token_hex(4),
        },
        "cm": {"product_token": str(uuid.uuid4())},
        "routee": {"application_id": secrets.token_hex(12), "application_secret": secrets.token_urlsafe(24)},
        "cequens": {"api_key": secrets.token_urlsafe(32), "user_name": "dialer"},
        "fractel": {
            "username": "dialer",
            "password": secrets.token_urlsafe(16),
            "webhook_password": secrets.token_urlsafe(16),
        },
    }
