"""The dialer: settings, database, providers and their simulators, webhooks, import/export, CLI."""

__version__ = "0.1.0"
