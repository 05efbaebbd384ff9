import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from netns import Internet, unavailable_reason  # noqa: E402


@pytest.fixture
def internet():
    """A fresh set of namespaces for one test; deleted afterwards, whatever happens."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Internet() as net:
        yield net


@pytest.fixture
def wanem():
    """pccl_py.tools.wanem, when this machine can run it (root, namespaces, cc, ethtool)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    for tool, why in (("cc", "a C compiler for its forwarder"), ("ethtool", "ethtool to turn offloads off")):
        if shutil.which(tool) is None:
            pytest.skip(f"the WAN emulator needs {why} ('{tool}' is missing)")
    from pccl_py.tools import wanem
    return wanem
