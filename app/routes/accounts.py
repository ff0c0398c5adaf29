"""Exchange accounts: ``GET /accounts``, ``POST /accounts``, ``DELETE /accounts/{exchange}/{account}`` (control scope).

Accounts come from the environment, ``ACCOUNTS_FILE`` (both fixed at start) and ``POST /accounts`` (stored in
Redis only as a Fernet token under FEEDPLANE_SECRET_KEY; ``control.accounts``). Listings show a key fingerprint
and never a key or secret. Validation errors name the field and never echo a value. Request bodies are never
logged.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.errors import ApiError, now_ms
from app.query import check_query
from app.routes.control import read_json
from control.accounts import API, Account, api_account_records, configured_accounts, delete_api_account, put_api_account
from control.credentials import parse_account
from control.topics import EXCHANGE_ALIASES

logger = logging.getLogger(__name__)


def _configured(request: Request) -> dict[str, Account]:
    return {a.ref: a for a in configured_accounts(request.app.state.settings)}


async def list_accounts(request: Request) -> Response:
    """``GET /accounts`` -> 200 ``{"accounts": [{"exchange", "account", "source": env|file|api, "key"}]}``."""
    records = [a.public() for a in _configured(request).values()]
    records += await api_account_records(request.app.state.store.redis)
    records.sort(key=lambda r: (r["exchange"], r["account"], r["source"]))
    return JSONResponse({"accounts": records})


async def create_account(request: Request) -> Response:
    """``POST /accounts`` -> 201 (new) or 200 (replaced) ``{"exchange", "account", "source": "api", "key"}``.

    409 ``accounts_disabled`` without FEEDPLANE_SECRET_KEY (a feature switched off by configuration is the
    client's to know about, not a server fault: a 5xx would page an operator); 409 ``account_exists`` for an account configured in
    the environment or ACCOUNTS_FILE; 400 on a body that breaks ``control.credentials.ACCOUNT_SCHEMA`` (messages
    name the field and never echo a secret).
    """
    settings = request.app.state.settings
    if not settings.secret_key:
        raise ApiError(
            409,
            "accounts_disabled",
            "adding accounts at run time needs FEEDPLANE_SECRET_KEY (a Fernet key) in the control server's "
            "environment: accounts are stored only encrypted",
        )
    # The shape ACCOUNTS_FILE entries follow too; AccountError -> 400 validation_error (app.errors).
    account = parse_account(await read_json(request), source=API)
    if (existing := _configured(request).get(account.ref)) is not None:
        raise ApiError(409, "account_exists", f"{account.ref} is configured in the {existing.source} source and "
                       "cannot be replaced at run time")  # fmt: skip
    created = await put_api_account(request.app.state.store.redis, account, key=settings.secret_key, now_ms=now_ms())
    logger.info("account %s %s (key %s)", account.ref, "added" if created else "replaced", account.fingerprint)
    return JSONResponse(account.public(), status_code=201 if created else 200)


async def delete_account(request: Request) -> Response:
    """``DELETE /accounts/{exchange}/{account}`` -> 200 ``{"deleted": {"exchange", "account"}}``.

    Only accounts added with POST /accounts: 409 ``account_read_only`` for environment/file accounts,
    404 ``account_not_found`` otherwise.
    ---
    delete:
      summary: forget an account added with POST /accounts
      responses:
        200: {description: deleted, content: {application/json: {schema: AccountDeletedSchema}}}
        404: {description: account_not_found, content: {application/json: {schema: ErrorEnvelopeSchema}}}
        409:
          description: account_read_only (it comes from the environment or ACCOUNTS_FILE)
          content: {application/json: {schema: ErrorEnvelopeSchema}}
    """
    check_query(request.query_params)
    exchange = EXCHANGE_ALIASES.get(request.path_params["exchange"], request.path_params["exchange"])
    name = request.path_params["account"]
    ref = f"{exchange}:{name}"
    if (existing := _configured(request).get(ref)) is not None:
        raise ApiError(409, "account_read_only", f"{ref} comes from the {existing.source} source; change it there")
    if not await delete_api_account(request.app.state.store.redis, exchange, name):
        raise ApiError(404, "account_not_found", f"no account {ref} was added with POST /accounts")
    logger.info("account %s deleted", ref)
    return JSONResponse({"deleted": {"exchange": exchange, "account": name}})


async def accounts(request: Request) -> Response:
    """``GET /accounts`` (list) and ``POST /accounts`` (add); one route, so a 405 lists both methods.
    ---
    get:
      summary: "accounts: exchange, account, source (env, file, api), key fingerprint; never a secret"
      responses:
        200: {description: the accounts, content: {application/json: {schema: AccountListSchema}}}
    post:
      summary: add or replace an account at run time (stored only encrypted under FEEDPLANE_SECRET_KEY)
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: '#/components/schemas/AccountRequest'}}}
      responses:
        201: {description: added, content: {application/json: {schema: AccountSchema}}}
        200: {description: replaced, content: {application/json: {schema: AccountSchema}}}
        409:
          description: >-
            accounts_disabled (no FEEDPLANE_SECRET_KEY: the feature is off), or account_exists (the account
            comes from the environment or ACCOUNTS_FILE)
          content: {application/json: {schema: ErrorEnvelopeSchema}}
    """
    check_query(request.query_params)
    return await (create_account(request) if request.method == "POST" else list_accounts(request))


ROUTES = [
    Route("/accounts", accounts, methods=["GET", "POST"], name="accounts"),
    Route("/accounts/{exchange}/{account}", delete_account, methods=["DELETE"], name="accounts_delete"),
]
