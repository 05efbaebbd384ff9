import os
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
