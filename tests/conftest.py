"""Shared fixtures: a session stand-in server, a factory for extra servers, a root token.

    def test_x(standin, root_token): ...            # shared server (config/loadtest-server.toml)
    def test_y(standin_factory):
        s = standin_factory(faults={"drop": 1}, env={"KALAMDB_WEBSOCKET_CLIENT_TIMEOUT_SECS": "2"})
"""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from standin.testing import TEST_ROOT_PASSWORD, StandinProcess, login  # noqa: E402

LOADTEST_CONFIG = os.path.join(ROOT, "config", "loadtest-server.toml")


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    """One stand-in for the whole session, loadtest config, data in a tmp dir, root = TEST_ROOT_PASSWORD."""
    data = tmp_path_factory.mktemp("standin-session")
    with StandinProcess(config=LOADTEST_CONFIG, data_dir=str(data), root_password=TEST_ROOT_PASSWORD) as s:
        yield s


@pytest.fixture
def standin_factory(tmp_path):
    """Call with StandinProcess kwargs to start extra servers; all are reaped at teardown.

    Defaults: config=config/loadtest-server.toml, data_dir under tmp_path, root_password=TEST_ROOT_PASSWORD.
    Pass config=None for KalamDB's code defaults."""
    procs: list[StandinProcess] = []

    def make(**kw) -> StandinProcess:
        kw.setdefault("config", LOADTEST_CONFIG)
        if "data_dir" not in kw:
            kw["data_dir"] = str(tmp_path / f"standin-{len(procs)}")
        p = StandinProcess(**kw)
        procs.append(p)
        p.start()
        return p

    yield make
    for p in procs:
        p.close()


def root_token_for(server: StandinProcess, password: str = TEST_ROOT_PASSWORD) -> str:
    """Access token of root on `server` (helper, usable with factory servers)."""
    return login(server.url, "root", password)


@pytest.fixture
def root_token(standin) -> str:
    return root_token_for(standin)
