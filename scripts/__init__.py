"""Runner, local exchange simulator, recording readers and benchmarks (importable by tests)."""
