"""The values of one exchange's own environment variables, read from its declaration (``control/exchanges/<id>.py``).

``read_exchanges(declarations, env)`` reads, for every declaration, exactly the variables it lists
(``ExchangeDeclaration.settings``) with ``control.setting_spec.read_value`` (same defaults, same errors, secrets never
shown), so ``control.settings`` needs no line per exchange. ``ExchangeSettings`` answers by role (``ws_uri``,
``rest_uri``, ``credentials``) or by declared variable (``get(spec)``, typed as the spec).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from control import exchanges as registry
from control.exchanges import ExchangeDeclaration
from control.setting_spec import PRIVATE_WS, REST, WS, Setting, read_value

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ExchangeSettings:
    """Values of ``declaration.settings``: ``values`` maps each variable's name to its parsed value.

    ``repr`` shows the non-secret values only."""

    declaration: ExchangeDeclaration
    values: Mapping[str, Any] = field(hash=False)

    @property
    def id(self) -> str:
        """The exchange id (``bitmart``)."""
        return self.declaration.id

    def get(self, spec: Setting[T]) -> T:
        """The value of ``spec``; raises KeyError when this exchange does not declare it."""
        return cast(T, self.values[spec.env])

    def by_role(self, role: str) -> Any:
        """The value of the variable filed under ``role``, or None when the exchange declares none."""
        spec = self.declaration.by_role(role)
        return None if spec is None else self.values[spec.env]

    @property
    def ws_uri(self) -> str:
        """Public WebSocket base URL (adapters add routes)."""
        return str(self.by_role(WS))

    @property
    def private_ws_uri(self) -> str:
        """WebSocket base URL of an account's private socket: its own (``PRIVATE_WS``) or the public one."""
        url = self.by_role(PRIVATE_WS)
        return self.ws_uri if url is None else str(url)

    @property
    def rest_uri(self) -> str:
        """REST base URL (order-book and private snapshots, listenKeys)."""
        return str(self.by_role(REST))

    @property
    def credentials(self) -> dict[str, str]:
        """The environment's default account: ``{"api_key", "api_secret", "memo"?, "uid"?}`` ("" when unset), the
        fields the declaration lists."""
        return {role: str(self.values[env]) for role, env in self.declaration.credentials.items()}

    def __repr__(self) -> str:
        shown = ", ".join(f"{s.env}={self.values[s.env]!r}" for s in self.declaration.settings if not s.secret)
        return f"ExchangeSettings({self.id}: {shown})"


def declarations_or_registry(declarations: Iterable[ExchangeDeclaration] | None) -> tuple[ExchangeDeclaration, ...]:
    """``declarations`` as a tuple, or every registered one (``control.exchanges.DECLARATIONS``, read at call
    time) when None."""
    return tuple(registry.DECLARATIONS.values() if declarations is None else declarations)


def read_exchanges(
    declarations: Iterable[ExchangeDeclaration] | None, env: Mapping[str, str]
) -> tuple[ExchangeSettings, ...]:
    """Every declared variable of every exchange (``declarations``, default the registry), read from ``env``.

    Raises SettingsError naming the first bad variable (exchange order, then declaration order)."""
    out = []
    for declaration in declarations_or_registry(declarations):
        values = {spec.env: read_value(spec, env) for spec in declaration.settings}
        out.append(ExchangeSettings(declaration, values))
    return tuple(out)


__all__ = ["ExchangeSettings", "declarations_or_registry", "read_exchanges"]
