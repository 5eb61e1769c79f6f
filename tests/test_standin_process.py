"""Stand-in: StandinProcess start-up, failure to start, process group (standin/testing.py)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from standin.testing import TEST_ROOT_PASSWORD, StandinError, StandinProcess, login, sql_ok

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bad_fault_value_fails_at_once_with_its_own_message_and_leaves_no_temp_dir():
    p = StandinProcess(faults={"drop": "abc"}, startup_timeout=20.0)
    assert os.path.isdir(p.data_dir)
    t0 = time.monotonic()
    with pytest.raises(StandinError) as ei:
        p.start()
    took = time.monotonic() - t0
    msg = str(ei.value)
    assert took < 10.0, took  # the child's exit is seen at once, not after startup_timeout
    assert "did not start within" not in msg
    assert "bad value for drop: could not convert string to float: 'abc'" in msg
    assert ei.value.returncode == 2 and "bad --fault" in ei.value.stderr
    assert not os.path.exists(p.data_dir)
    p.close()  # harmless after a failed start


def test_good_start_keeps_its_temp_dir_until_close():
    p = StandinProcess(config=None)
    with p:
        assert p.returncode is None and os.path.isdir(p.data_dir)
        assert p.get_faults() == {}
    assert not os.path.exists(p.data_dir)


def test_failed_start_keeps_a_data_dir_it_did_not_create(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    p = StandinProcess(faults={"reorder": "-1"}, data_dir=str(d))
    with pytest.raises(StandinError) as ei:
        p.start()
    assert ei.value.returncode == 2 and "bad value for reorder: must be >= 0" in str(ei.value)
    assert d.is_dir()
    p.close()
    assert d.is_dir()


def test_failed_restart_keeps_the_data_and_does_not_retry_a_bad_option():
    p = StandinProcess(config=None)
    try:
        p.start()
        tok = login(p.url, "root", TEST_ROOT_PASSWORD)
        sql_ok(p.url, tok, "CREATE NAMESPACE k")
        sql_ok(p.url, tok, "CREATE SHARED TABLE k.t (id TEXT PRIMARY KEY)")
        sql_ok(p.url, tok, "INSERT INTO k.t (id) VALUES ('kept')")
        t0 = time.monotonic()
        with pytest.raises(StandinError) as ei:
            p.restart(faults={"drop": "abc"})
        assert time.monotonic() - t0 < 8.0  # exit code 2: no 10 s of retries
        assert ei.value.returncode == 2 and os.path.isdir(p.data_dir)
        p.restart(faults={})
        assert sql_ok(p.url, tok, "SELECT id FROM k.t")["results"][0]["rows"] == [["kept"]]
    finally:
        p.close()
    assert not os.path.exists(p.data_dir)


def test_child_runs_in_its_own_session(standin):
    assert os.getsid(standin.pid) == standin.pid
    assert os.getpgid(standin.pid) != os.getpgid(0)


HELPER = textwrap.dedent("""
    import time, urllib.request
    from standin.testing import StandinProcess
    with StandinProcess(config=None) as s:
        try:
            print("pid", s.pid, flush=True)  # inside the try: the SIGINT may come right after it
            time.sleep(30)
        except KeyboardInterrupt:
            # SIGINT went to this process group: the stand-in is not in it and still answers
            with urllib.request.urlopen(s.url + "/health", timeout=5) as r:
                print("alive", r.status, flush=True)
    print("rc", s.returncode, flush=True)
""")


def test_ctrl_c_to_the_owners_group_leaves_the_stand_in_to_its_owner():
    """A terminal's Ctrl-C is SIGINT to the foreground process group. The owner (in a group of its own
    here, so that pytest is not in it) gets it; the stand-in keeps serving until the owner stops it."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    h = subprocess.Popen([sys.executable, "-c", HELPER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, start_new_session=True)
    try:
        first = h.stdout.readline().split()
        assert first[0] == "pid", (first, h.stderr.read() if h.poll() is not None else "")
        spid = int(first[1])
        assert os.getpgid(spid) != h.pid  # not in the owner's group
        os.killpg(h.pid, signal.SIGINT)
        out, err = h.communicate(timeout=30)
        assert out.split("\n")[:2] == ["alive 200", "rc 0"], (out, err[-2000:])  # stopped by its owner: SIGTERM, 0
        assert h.returncode == 0
        with pytest.raises(ProcessLookupError):
            os.kill(spid, 0)
    finally:
        if h.poll() is None:
            os.killpg(h.pid, signal.SIGKILL)
            h.wait(5)


def test_bad_config_fails_at_once_with_its_own_message(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nhost = "127.0.0.1"\nport = 8080\n[storage]\n[limits]\n[logging]\n[performance]\n'
                   '[websocket]\nnotification_channel_capacity = 0\n')
    p = StandinProcess(config=str(cfg))
    with pytest.raises(StandinError) as ei:
        p.start()
    assert ei.value.returncode == 2
    assert "bad config: config key notification_channel_capacity must be an integer >= 1" in str(ei.value)
    assert not os.path.exists(p.data_dir)
