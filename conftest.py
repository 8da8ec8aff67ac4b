# The suite's pytest plugin (options, fixtures, hooks) lives in fixtures/plugin.py.
pytest_plugins = ["fixtures.plugin"]
