"""Feedplane's shared contract: settings, topics, events, Redis key names and the desired-state store.

Both the control server (``app``) and the workers (``workers``) import from here; this package
imports neither of them.
"""
