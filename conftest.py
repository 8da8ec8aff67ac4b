# A checkout registers the suite's pytest plugin here; an installed suite registers it through
# its `pytest11` entry point, which carries the module's own name, so pytest loads it once.
pytest_plugins = ["pytest_tcp_conformance.plugin"]
