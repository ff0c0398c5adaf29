"""The exchange simulator package (see ``scripts.simulator``)."""
