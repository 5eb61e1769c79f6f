"""The compiled parts, all optional: where no C compiler is found the install goes on without them and the
same steps run in Python (KALAMDB_LT_PURE_PYTHON=1 chooses the Python where they were built).

* kalamclient._speedups: push mode's read of a listener's socket, the read watcher's callback (kalamclient/ws.py, _on_readable)
* loadtest.run._speedups: the change branch of loadtest.run.listening.ListenerSession._dispatch, DeliveryStats.__call__
* checks._speedups: checks.model.content_digest and old_values_digest, checks.arrivals.ArrivalLog.record_row
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("kalamclient._speedups", ["kalamclient/_speedups.c"], include_dirs=["csrc"],
                             depends=["csrc/slots.h"], optional=True),
                   Extension("loadtest.run._speedups", ["loadtest/run/_speedups.c"], include_dirs=["csrc"],
                             depends=["csrc/slots.h"], optional=True),
                   Extension("checks._speedups", ["checks/_speedups.c"], include_dirs=["csrc"],
                             depends=["csrc/slots.h"], optional=True)])
