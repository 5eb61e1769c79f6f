"""The one compiled part: kalamclient._speedups (push mode's socket read, in C). Optional: where no C compiler is
found the install goes on without it and kalamclient.ws runs the same steps in Python."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("kalamclient._speedups", ["kalamclient/_speedups.c"], optional=True)])
