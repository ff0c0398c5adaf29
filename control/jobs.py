"""arq job contracts between the control server (enqueues) and the workers (run them).

Jobs are nudges, not the truth: the desired state in Redis is. A lost or duplicated job is
harmless because every worker also reconciles on its heartbeat.
"""

from __future__ import annotations

#: Job ``reconcile(version: int, request_id: str | None = None)``: re-plan connections for the desired state at
#: ``version`` and wake every worker; ``request_id`` is the control request's ``X-Request-ID``, carried into the
#: worker's log lines for the job. Returns ``{"version", "connections", "topics"}``.
RECONCILE = "reconcile"


def reconcile_job_id(version: int) -> str:
    """Deterministic arq ``_job_id`` so one desired-state version is planned once."""
    return f"reconcile:{version}"
