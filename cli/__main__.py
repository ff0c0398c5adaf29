"""``python -m cli`` = ``feedplane``."""

from cli.main import main

main()
