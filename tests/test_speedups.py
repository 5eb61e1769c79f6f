"""The compiled parts (setup.py: kalamclient._speedups, checks._digest) are built where a C compiler is, and
give what the Python gives. Push mode's read is tested both ways in tests/test_client_gevent.py."""
from __future__ import annotations

import collections
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from checks import model

ROOT = Path(__file__).resolve().parents[1]


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def test_the_compiled_parts_are_built_and_used_where_a_c_compiler_is():
    if _compiler() is None:
        pytest.skip("no C compiler here: the install went on without the compiled parts")
    from kalamclient import ws
    assert ws._pump is not None, "kalamclient._speedups was not built: pip install -e . again"
    assert model.content_digest is not model.content_digest_python, "checks._digest was not built"
    assert model.old_values_digest is not model.old_values_digest_python


def test_the_python_is_used_when_asked_for():
    code = ("import kalamclient.ws as ws, checks.model as m;"
            "print(ws._pump is None, m.content_digest is m.content_digest_python,"
            " m.old_values_digest is m.old_values_digest_python)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env=dict(os.environ, KALAMDB_LT_PURE_PYTHON="1"))
    assert out.stdout.split() == ["True", "True", "True"], out.stdout + out.stderr


class Odd:
    """A value whose text is its own __format__."""

    def __format__(self, spec):
        return "odd\u00e9"


def _value(rng: random.Random):
    pick = rng.randrange(12)
    if pick == 0:
        return rng.randrange(-10**20, 10**20)
    if pick == 1:
        return rng.random() * 10 ** rng.randrange(-5, 20)
    if pick == 2:
        return rng.choice([True, False, None, float("nan"), float("inf"), -0.0])
    if pick == 3:
        return [rng.randrange(10), "x", None]
    if pick == 4:
        return {"k": rng.randrange(10)}
    if pick == 5:
        return Odd()
    if pick == 6:   # a lone surrogate: surrogatepass
        return "a\ud800b" + chr(rng.randrange(0xDC00, 0xE000))
    if pick == 7:
        return "".join(chr(rng.randrange(0x80, 0x10FFFF)) for _ in range(rng.randrange(8))
                       ).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if pick == 8:
        return ""
    if pick == 9:
        return "=\x1f\x00"
    return "".join(rng.choice("abcxyz019 _-:") for _ in range(rng.randrange(80)))


def test_the_digests_compiled_give_the_pythons_numbers_for_every_kind_of_row():
    if model.content_digest is model.content_digest_python:
        pytest.skip("checks._digest was not built")
    c, py = model.content_digest, model.content_digest_python
    rng = random.Random(20261207)
    names = ["id", "writer", "n", "payload", "body", "é", "\ud83d", "", "_seq", "_deleted"]
    for i in range(3000):
        row = {k: _value(rng) for k in rng.sample(names, rng.randrange(len(names) + 1))}
        cols = rng.sample(names, rng.randrange(len(names) + 1))
        for values in (row, collections.OrderedDict(row), collections.ChainMap(row)):
            for columns in (cols, tuple(cols), iter(cols)):
                want = py(values, list(cols))
                assert c(values, columns) == want, (i, row, cols)
            for key in rng.sample(names, 2):
                want = model.old_values_digest_python(values, key)
                assert model.old_values_digest(values, key) == want, (i, row, key)
            assert model.old_values_digest(values) == model.old_values_digest_python(values)
    assert c({}, ()) == py({}, ()) == 0


def test_content_digest_compiled_raises_where_the_python_raises():
    if model.content_digest is model.content_digest_python:
        pytest.skip("checks._digest was not built")
    for values, columns in (({}, [5]), ({"a": 1}, 5), ({"a": 1}, None)):
        with pytest.raises(TypeError):
            model.content_digest_python(values, columns)
        with pytest.raises(TypeError):
            model.content_digest(values, columns)
    for old in (5, None):   # not iterable
        with pytest.raises(TypeError):
            model.old_values_digest_python(old)
        with pytest.raises(TypeError):
            model.old_values_digest(old)
    # a present non-str column name is formatted, as in the f-string
    assert model.content_digest({5: "x"}, [5]) == model.content_digest_python({5: "x"}, [5])
