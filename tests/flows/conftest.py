"""Fixtures of the flow tests: an isolated Prefect DB (the scenes and the tiny model are in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_db(tmp_path_factory: pytest.TempPathFactory):
    """Flows of this session record to a throw-away SQLite DB (the ephemeral server's), not ~/.prefect."""
    from prefect.settings import temporary_settings

    import flows  # noqa: F401 - PREFECT_LOGGING_EXTRA_LOGGERS before Prefect is imported

    db = tmp_path_factory.mktemp("prefect") / "prefect.db"
    with temporary_settings(updates={
        "server.database.connection_url": f"sqlite+aiosqlite:///{db}",
        "server.analytics_enabled": False,
        "server.ephemeral.startup_timeout_seconds": 180,  # a busy 2-core CI machine
        "api.url": None,
    }):
        yield db
        from prefect.server.api.server import SubprocessASGIServer

        SubprocessASGIServer().stop()  # now, while pytest still has its streams (not at exit)
