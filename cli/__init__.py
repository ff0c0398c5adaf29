"""The ``feedplane`` command line: the control API over HTTP (``cli.client``), rich tables (``cli.render``), SSE
tail with resume (``cli.tail``), and supervisorctl for the local processes (``cli.ctl``). Imports nothing from
``app``/``workers``: it is a client of the public API only."""
