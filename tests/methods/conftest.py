"""Markers for the method tests."""


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: accelerate-launched 2-process training runs (~1 min); "
                                       "-m 'not e2e' skips them")
