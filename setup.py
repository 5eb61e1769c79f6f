"""The compiled parts, both optional: where no C compiler is found the install goes on without them and the
same steps run in Python (KALAMDB_LT_PURE_PYTHON=1 chooses the Python where they were built).

* kalamclient._speedups: push mode's read of a listener's socket (kalamclient/ws.py, _on_readable)
* checks._digest: checks.model.content_digest
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("kalamclient._speedups", ["kalamclient/_speedups.c"], optional=True),
                   Extension("checks._digest", ["checks/_digest.c"], optional=True)])
