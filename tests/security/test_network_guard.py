"""The suite's own network guard: outside addresses fail, loopback works."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.netguard.guard import NetworkAccessError, attempts


def test_connect_to_outside_address_is_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkAccessError):
            s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routable anyway
    finally:
        s.close()
        attempts.clear()  # this test provoked it on purpose


def test_dns_lookup_of_outside_name_is_refused():
    with pytest.raises(NetworkAccessError):
        socket.getaddrinfo("huggingface.co", 443)
    attempts.clear()


def test_loopback_round_trip_works():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        conn.sendall(conn.recv(16).upper())
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"ping")
        assert client.recv(16) == b"PING"
    thread.join(timeout=5)
    server.close()


def test_udp_send_and_gethostbyname_are_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(NetworkAccessError):
            s.sendto(b"x", ("192.0.2.1", 53))
    finally:
        s.close()
    with pytest.raises(NetworkAccessError):
        socket.gethostbyname("example.org")
    attempts.clear()


def test_subprocesses_get_the_guard_too():
    import subprocess
    import sys

    code = "import socket; s = socket.socket(); s.connect(('192.0.2.1', 80))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "NetworkAccessError" in proc.stderr
