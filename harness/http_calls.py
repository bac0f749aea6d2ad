"""One plain HTTP/1.1 call, the path sent exactly as given (Envoy's URL handling is tested)."""

import http.client
import json
import socket
import ssl
from pathlib import Path

from cryptography import x509


def request(host: str, port: int, method: str, path: str, body: object = None,
            headers: dict[str, str | None] | None = None) -> tuple[int, dict[str, str], object]:
    """One HTTP/1.1 request with the path sent exactly as given; the body parsed as JSON.
    It says content-type: application/json unless `headers` say otherwise (None: no
    such header)."""
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        sent = {"content-type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload,
                     headers={name: value for name, value in sent.items() if value is not None})
        return _reply(conn.getresponse())
    finally:
        conn.close()


def raw_exchange(host: str, port: int, data: bytes) -> tuple[int, dict[str, str], object]:
    """`data` sent as it is (any HTTP version, any header, a body cut short), and the one
    response read back; the body parsed as JSON when it is."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return _reply(response)


def _reply(response: http.client.HTTPResponse) -> tuple[int, dict[str, str], object]:
    """The status, the headers (lower-case names) and the body, parsed as JSON when it is."""
    raw = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    try:
        parsed: object = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return response.status, headers, parsed


def https_connection(port: int, ca: Path, host: str = "localhost") -> http.client.HTTPSConnection:
    """An HTTPS connection to Envoy on 127.0.0.1:`port` that asks for `host` by SNI and checks
    the certificate for it against `ca`, whatever `host` resolves to."""
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(host, port, timeout=20, context=context)
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn.sock = context.wrap_socket(raw, server_hostname=host)
    return conn


def https_get(conn: http.client.HTTPSConnection, path: str,
              headers: dict[str, str] | None = None) -> tuple[int, object, int]:
    """GET `path` on an open HTTPS connection: the status, the JSON body and the serial of
    the certificate the connection was served."""
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = json.loads(response.read())
    assert conn.sock is not None
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    return response.status, body, x509.load_der_x509_certificate(der).serial_number
