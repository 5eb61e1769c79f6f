"""Shared fixtures: a session stand-in server, a factory for extra servers, a root token; the same
for the real KalamDB binary; and ``server``/``server_factory``, parametrised over both.

    def test_x(standin, root_token): ...            # shared server (config/loadtest-server.toml)
    def test_y(standin_factory):
        s = standin_factory(faults={"drop": 1}, env={"KALAMDB_WEBSOCKET_CLIENT_TIMEOUT_SECS": "2"})
    def test_z(kalamdb): ...                         # session real server (skips without the binary)
    def test_w(server, server_factory):              # runs twice: [standin] and [kalamdb]
        server.kind, server.url, server.root_password; server_factory(env={...}, root_password=None)

The real binary is found by servers.kalamdb.find_kalamdb_bin ($KALAMDB_BIN, else
<repo>/../shared/kalamdb/kalamdb-server); where it is missing, the kalamdb tests skip and say so.
"""
from __future__ import annotations

import os
import signal
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The Ctrl-C tests send SIGINT to the load tests they start. A shell that starts the suite in the background
# (`pytest ... &` from a script) sets SIGINT to ignored, which children inherit; a handler here is reset to the
# default in every program this process starts, so they get Ctrl-C as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from servers.kalamdb import KalamdbProcess, find_kalamdb_bin, kalamdb_bin_candidate  # noqa: E402
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


# ---------------------------------------------------------------------------------------------------
# the real KalamDB server, and fixtures parametrised over both servers
# ---------------------------------------------------------------------------------------------------

SERVER_KINDS = ("standin", "kalamdb")


def kalamdb_missing_reason() -> str:
    return f"real KalamDB not found at {kalamdb_bin_candidate()}; set KALAMDB_BIN"


@pytest.fixture(scope="session")
def kalamdb_bin() -> str:
    """Path of the real kalamdb-server; skips the test where it is missing."""
    path = find_kalamdb_bin()
    if path is None:
        pytest.skip(kalamdb_missing_reason())
    return path


@pytest.fixture(scope="session")
def kalamdb(kalamdb_bin):
    """One real KalamDB for the whole session: loadtest config, fresh temp dirs, random root password
    (``kalamdb.root_password``). Tests share it: each uses its own namespace and users."""
    with KalamdbProcess(kalamdb_bin, LOADTEST_CONFIG) as k:
        yield k


@pytest.fixture
def kalamdb_factory(kalamdb_bin):
    """Call with KalamdbProcess kwargs to start extra real servers; all are closed at teardown."""
    procs: list[KalamdbProcess] = []

    def make(**kw) -> KalamdbProcess:
        kw.setdefault("config", LOADTEST_CONFIG)
        p = KalamdbProcess(kalamdb_bin, **kw)
        procs.append(p)
        try:
            p.start()
        except BaseException:
            p.close()
            raise
        return p

    yield make
    for p in procs:
        p.close()


def server_kind(server) -> str:
    """``"kalamdb"`` or ``"standin"`` (StandinProcess has no ``kind``)."""
    return getattr(server, "kind", "standin")


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(request):
    """The session server of each kind in turn: every test using it runs on the stand-in and on the
    real KalamDB (``[kalamdb]`` skips where the binary is missing). Both have ``url``, ``ws_url``,
    ``pid`` and ``root_password``."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def server_factory(request, server):
    """Fresh servers of the same kind as ``server``: ``server_factory(env={...}, root_password=None)``.

    Only the arguments both launchers take are meant to be passed (env, root_password, config,
    jwt_secret); ``root_password`` defaults to the launcher's own (stand-in: TEST_ROOT_PASSWORD,
    KalamDB: random), so read it back from ``.root_password``."""
    kind = server_kind(server)
    factory = request.getfixturevalue("kalamdb_factory" if kind == "kalamdb" else "standin_factory")
    return factory


def only_on(server, kind: str, reason: str) -> None:
    """Skip unless ``server`` is of ``kind`` (for tests of one server's own features)."""
    if server_kind(server) != kind:
        pytest.skip(f"{kind} only: {reason}")
