"""Helpers of the health endpoint tests: an echo pair (client-1 -> server-1 ->
an echo backend) and one-line requests to a daemon's endpoint."""

import json

import pytest

import lab

PROBE_INTERVAL = 0.5  # lab.node_config's health.probe_interval


@pytest.fixture
def echo_pair(workdir, cleanup):
    backend = lab.Backend()
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend_address(backend))
    cleanup.append(pair.stop)
    return pair, backend


def backend_address(backend):
    return f"127.0.0.1:{backend.port}"


def code(tunnel, path, method="GET"):
    return tunnel.http(path, method=method)[0]


def problems(tunnel, path):
    return json.loads(tunnel.http(path)[2])["tunneld"]["problems"]
