"""control.errors: one root for Feedplane's own exceptions (the tree drawn in its docstring)."""

from __future__ import annotations

import pytest

from app.errors import ApiError
from app.sse_cursor import CursorError
from control import errors as errors_module
from control.accounts import DecryptError
from control.credentials import AccountError
from control.errors import FeedplaneError, SettingsError
from control.topics import TopicError
from workers.books import SnapshotError
from workers.exchanges import UnknownExchangeError
from workers.exchanges.base import AdapterError
from workers.private import PrivateAuthError
from workers.rest import RestError

VALUE_ERRORS = (SettingsError, TopicError, AccountError, DecryptError, CursorError)


@pytest.mark.parametrize(
    "cls", [*VALUE_ERRORS, ApiError, RestError, SnapshotError, PrivateAuthError, AdapterError, UnknownExchangeError]
)
def test_every_error_derives_from_the_root(cls: type[Exception]) -> None:
    assert issubclass(cls, FeedplaneError)
    assert cls.__name__ in (errors_module.__doc__ or "")  # drawn in the tree


@pytest.mark.parametrize("cls", VALUE_ERRORS)
def test_value_errors_are_still_value_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, ValueError)


def test_snapshot_errors_are_rest_errors() -> None:
    err = SnapshotError("HTTP 500: b''", status=500)
    assert isinstance(err, RestError) and err.status == 500 and err.retry_after_s is None
