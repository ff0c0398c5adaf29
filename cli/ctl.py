"""``feedplane ctl ...`` and ``scripts/ctl ...``: ``supervisorctl -c supervisord.conf ...`` that works from a plain shell.

``supervisord.conf`` names its socket and programs with environment variables that ``scripts/run`` sets
(``FEEDPLANE_RUN_DIR``, ``WORKERS``, ``FEEDPLANE_PYTHON``); supervisorctl expands the same file and fails with
"Format string 'unix://%(ENV_FEEDPLANE_RUN_DIR)s/supervisor.sock' ... cannot be expanded" when they are unset.
``ctl_env`` fills in what ``scripts/run`` would have used (``<project>/run``, ``WORKERS`` or 2, this Python), keeping
any value already set, so the same supervisord that ``scripts/run`` started is reached: ``ctl status``,
``ctl restart api``, ``ctl tail -f worker_00`` (a bare worker name gets its group, ``worker:worker_00``; each program
logs to ``<run dir>/<name>.log``, which ``tail`` reads).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The project folder of this checkout (supervisord.conf, run/).
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKERS = "2"
#: A worker's process name without its group (``worker_00``): supervisorctl wants ``worker:worker_00``.
_BARE_WORKER = re.compile(r"worker_\d+")


def project_root(cwd: Path | None = None) -> Path:
    """The current folder when it holds a ``supervisord.conf`` (run from the project folder), else ``ROOT``."""
    here = Path.cwd() if cwd is None else cwd
    return here if (here / "supervisord.conf").is_file() else ROOT


def config_path(root: Path = ROOT) -> Path:
    """``supervisord.conf`` of the project."""
    return root / "supervisord.conf"


def ctl_env(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> dict[str, str]:
    """``environ`` (default ``os.environ``) plus the variables supervisord.conf needs, where unset or empty."""
    env = dict(os.environ if environ is None else environ)
    defaults = {"FEEDPLANE_RUN_DIR": str(root / "run"), "WORKERS": DEFAULT_WORKERS, "FEEDPLANE_PYTHON": sys.executable}
    for name, value in defaults.items():
        if not env.get(name):
            env[name] = value
    return env


def ctl_command(args: Sequence[str], root: Path = ROOT) -> list[str]:
    """The supervisorctl command line for ``args``; a bare ``worker_00`` becomes ``worker:worker_00``."""
    names = [f"worker:{a}" if _BARE_WORKER.fullmatch(a) else a for a in args]
    return [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(config_path(root)), *names]


def run_ctl(args: Sequence[str], environ: Mapping[str, str] | None = None, root: Path | None = None) -> int:
    """Run supervisorctl with ``args`` in the foreground (``tail -f`` until Ctrl-C); returns its exit code.
    ``root``: the project folder (default ``project_root()``)."""
    root = project_root() if root is None else root
    try:
        return subprocess.call(ctl_command(args, root), cwd=root, env=ctl_env(environ, root))
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cli.ctl ARGS`` (``scripts/ctl``)."""
    return run_ctl(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
