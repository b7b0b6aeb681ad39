import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402


@pytest.fixture
def workdir():
    d = lab.tmpdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ca(workdir):
    return lab.CA(os.path.join(workdir, "ca"))


@pytest.fixture
def cleanup():
    """Collects stop()/close()/delete() callables, run in reverse order at teardown."""
    items = []
    yield items
    for fn in reversed(items):
        try:
            fn()
        except Exception:  # noqa: BLE001 - teardown must go on
            pass
