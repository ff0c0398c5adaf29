"""The one root of Feedplane's own exceptions, and the errors of the settings.

Every error Feedplane raises on purpose derives from ``FeedplaneError``, so a caller can catch "ours" in one
clause and the control server maps them to the error envelope in one table (``app.errors.EXCEPTION_HANDLERS``).
Errors that are also a bad *value* keep ``ValueError`` as a second base, so existing ``except ValueError``
clauses still catch them. The tree (module where each class lives)::

    FeedplaneError
    ├── SettingsError (ValueError)          control.errors: an environment variable is missing or invalid
    ├── TopicError (ValueError)             control.topics: a topic, exchange, channel or account name is invalid
    ├── AccountError (ValueError)           control.credentials: an account entry breaks ACCOUNT_SCHEMA
    ├── DecryptError (ValueError)           control.accounts: a sealed secret cannot be opened
    ├── ApiError                            app.errors: an HTTP error answer chosen by a handler (status, code)
    ├── CursorError (ValueError)            app.sse_cursor: an SSE resume cursor that does not fit
    ├── RestError                           workers.rest: one REST call failed (status, retry_after_s)
    │   └── SnapshotError                   workers.books: an order-book snapshot could not be fetched
    ├── PrivateAuthError                    workers.private: the exchange refused an account's credentials
    └── AdapterError                        workers.exchanges.base: an adapter cannot serve a request
        └── UnknownExchangeError (KeyError) workers.exchanges: no adapter for that exchange id

This module imports nothing of Feedplane, so every package (``control``, ``app``, ``workers``) can import it.
"""

from __future__ import annotations

__all__ = ["FeedplaneError", "SettingsError"]


class FeedplaneError(Exception):
    """Root of every exception Feedplane raises on purpose (see the tree in the module docstring)."""


class SettingsError(FeedplaneError, ValueError):
    """An environment variable is missing or invalid; ``name`` is the variable.

    ``str()`` is ``"NAME: reason"``; the reason never quotes a secret's value.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
