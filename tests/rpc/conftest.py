"""Fixtures: a session-wide `tessera dev` node (200 ms blocks) and clients for it.

The node binary is $TESSERA_BIN (default ${CARGO_TARGET_DIR:-target}/debug/tessera under the
repository root); these tests never build it.
"""

from __future__ import annotations

import signal

import pytest

from rpc_helpers import Node


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("tessera-node"), name="session")
    try:
        n.start()
        yield n
    finally:
        code = n.stop(signal.SIGTERM)
        if code not in (0, None):
            print(f"session node exited with {code}; stderr tail:\n{n.stderr_tail()}")


@pytest.fixture(scope="session")
def w3(node):
    return node.web3()


@pytest.fixture(scope="session")
def url(node):
    return node.http_url


@pytest.fixture(scope="session")
def ws_url(node):
    return node.ws_url


@pytest.fixture(autouse=True)
def _node_still_alive(request):
    """After every test that used the session node, fail loudly if the node died under it."""
    yield
    if "node" in request.fixturenames:
        n = request.getfixturevalue("node")
        assert n.alive(), (
            f"the node died during {request.node.name} (exit code {n.proc.returncode}).\n"
            f"--- stderr tail ---\n{n.stderr_tail()}"
        )
