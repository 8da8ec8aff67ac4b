"""The pytest plugin of the TCP conformance suite (pytest_tcp_conformance.plugin)."""
