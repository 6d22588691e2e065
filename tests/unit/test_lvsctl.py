"""lvsctl's own HTTP client: start-up cost (it runs from notify scripts) and response parsing.
The end-to-end use against a real daemon is in test_daemon.py / test_daemon_integration.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from lvsd.cli import lvsctl


def test_import_pulls_in_no_http_client_asyncio_or_aiohttp():
    code = (
        "import sys, lvsd.cli.lvsctl\n"
        "bad = [m for m in ('http.client', 'email', 'asyncio', 'aiohttp') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "raw, want",
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}")),
        (b"HTTP/1.1 422 Unprocessable\r\nContent-Length: 3\r\n\r\nabcdef", (422, b"abc")),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n", (200, b"abcde")),
        (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", (200, b"until close")),
    ],
)
def test_parse_response(raw, want):
    assert lvsctl._parse_response("s", raw) == want


@pytest.mark.parametrize("raw", [b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.0 abc\r\n\r\n", b"HTTP/1.0 200 OK\r\n"])
def test_a_non_http_answer_is_unreachable(raw):
    with pytest.raises(lvsctl.Unreachable, match="no HTTP answer"):
        lvsctl._parse_response("s", raw)


def _serve_once(path: str, answer: bytes) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            req = b""
            while b"\r\n\r\n" not in req:
                req += conn.recv(4096)
            head, _, body = req.partition(b"\r\n\r\n")
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < n:
                body += conn.recv(4096)
            conn.sendall(answer + b" " + head.split(b"\r\n")[0] + b" " + body)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_request_sends_method_url_and_json_body(tmp_path):
    path = str(tmp_path / "s.sock")
    t = _serve_once(path, b"HTTP/1.0 200 OK\r\n\r\n")
    code, body = lvsctl.request(path, "POST", "/role", {"role": "master"}, timeout=5)
    t.join(5)
    assert code == 200
    assert body == b' POST /role HTTP/1.0 {"role": "master"}'


def test_main_exits_3_with_one_line_when_nobody_listens(tmp_path, capsys):
    assert lvsctl.main(["-s", str(tmp_path / "none.sock"), "status"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lvsctl: cannot reach lvsd: ")


def test_status_prints_each_refused_kernel_op_with_its_service(capsys):
    """Issue 11, item 2: `lvsctl status` shows what the kernel refuses, by service."""
    status = {
        "state": "running", "pid": 1, "uptime": 5, "backend": "memory", "config": "/etc/lvsd/lvsd.toml",
        "status": "1 services, 2 servers; 1 kernel ops refused", "servers": 2, "services": 1,
        "health": {"up": 2}, "role": None,
        "reconcile": {"ok": False, "duration": 0.001, "ops": {"add-server": 1}, "errors": {"add-server": 3},
                      "repairs": 0, "refusals": {"web": {"add-server": 3}},
                      "refused": [{"service": "web", "kind": "add-server", "error": "Invalid argument", "count": 3,
                                   "op": "add-server tcp 10.0.0.1:80 -> 127.255.255.255:80 weight 1 nat",
                                   "since": 1.0, "retry_in": 4.0}]},
        "reload": {"ok": True, "count": {}, "error": ""},
    }
    lvsctl._print_status(status)
    out = capsys.readouterr().out
    assert "3 refused" in out
    assert ("refused:  web: add-server tcp 10.0.0.1:80 -> 127.255.255.255:80 weight 1 nat: Invalid argument "
            "(3 times, retry in 4s)") in out
