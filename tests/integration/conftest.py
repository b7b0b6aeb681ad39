import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402

# With CI=true a root-only test that skips fails (ci_skips.py).
pytest_plugins = ["ci_skips"]

from firewall_lab import site  # noqa: E402,F401  (the fixture of the test_firewall*.py files)
from health_lab import echo_pair  # noqa: E402,F401  (the fixture of the test_health*.py files)


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


@pytest.fixture(scope="session")
def debs():
    """The .deb of this build as versions 0.1.0 and 0.1.1 (for upgrades), by cpack."""
    build = os.path.join(lab.ROOT, "build")
    out = tempfile.mkdtemp(prefix="tunneld-debs-")
    made = {}
    for version in ("0.1.0", "0.1.1"):
        r = subprocess.run(["cpack", "-G", "DEB", "-B", os.path.join(out, version), "-D",
                            f"CPACK_PACKAGE_VERSION={version}"], cwd=build, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        made[version] = os.path.join(out, version, f"tunneld_{version}_amd64.deb")
        assert os.path.exists(made[version]), os.listdir(os.path.join(out, version))
    yield made
    shutil.rmtree(out, ignore_errors=True)
