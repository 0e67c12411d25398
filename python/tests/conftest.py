"""Fixtures of the client's own tests. Tests that need the lab (tests/tests/python_client.rs makes
it and describes it in the environment, see lab.py) fail without it, rather than skip: a skip
would look green."""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from lab import Lab  # noqa: E402

from faultd_client import Client  # noqa: E402

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def lab() -> Lab:
    found = Lab.from_env()
    if found is None:
        pytest.fail("no lab: run through `cargo test -p faultline-tests --test python_client` "
                    "(it makes one), or set FAULTLINE_SOCKET and FAULTLINE_LAB_{A,B}_{NETNS,DEV,"
                    "ADDR}", pytrace=False)
    return found


@pytest.fixture
def client(lab: Lab) -> Iterator[Client]:
    """A connection to the lab's faultd; the test must leave no fault behind."""
    with Client(lab.socket) as c:
        yield c
        left = c.list()
        if left:
            c.clear()
            pytest.fail(f"the test left faults behind: {[v.id for v in left]}")
