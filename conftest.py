"""Set-up of every pytest session here (tests/ and the nbval notebooks alike): the tests never see the user's run
cache or reproduce tag. With GCLIB_RUNS set in the shell, as the README suggests for the long profiles, runs would
land in that cache (the notebooks' kernels inherit the environment) and the bookkeeping tests would read it."""
import os

from gclib.rundir import TRAINED_BY_ENV


def pytest_configure(config):
    for var in ("GCLIB_RUNS", TRAINED_BY_ENV):
        os.environ.pop(var, None)
