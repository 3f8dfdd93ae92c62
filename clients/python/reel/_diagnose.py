"""Why a channel does not connect, when gRPC only says UNAVAILABLE (or a
call waits out its deadline): a connection of this process's own to the
server, with the client's TLS settings, that names the mistake. Used
only after a call or a stream failed on a channel that is not connected.

A TLS mistake (a CA that does not sign reeld's certificate, a certificate
that does not name the host, TLS on one side only, a client certificate
reeld asks for or refuses) is a settings mistake: retrying cannot mend it, so a
stream stops reconnecting and says so at once."""
from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import threading
import time
from typing import Optional, Tuple

# An HTTP/2 client preface and an empty SETTINGS frame: a server that
# speaks HTTP/2 in the clear answers with a SETTINGS frame of its own.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04
# How long one look at the server may take; how long its answer holds.
PROBE_SECONDS = 2.0
KEEP_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    hint: str
    config: bool        # a settings mistake: retrying will not mend it
    cert_refused: bool = False   # reeld closed the connection after the handshake


def host_port(target: str) -> Optional[Tuple[str, int]]:
    """(host, port) of a "host:port" or "[v6]:port" target; None for the
    other forms gRPC takes (unix:, dns:///...), which are not probed."""
    if "://" in target or target.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return None
    host, _, port = target.rpartition(":")
    if not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def _connect(addr: Tuple[str, int]) -> socket.socket:
    return socket.create_connection(addr, timeout=PROBE_SECONDS)


def _speaks_h2_in_clear(addr: Tuple[str, int]) -> bool:
    try:
        with _connect(addr) as s:
            s.sendall(_PREFACE)
            head = s.recv(9)
            return len(head) >= 4 and head[3] == _SETTINGS
    except OSError:
        return False


def _speaks_tls(addr: Tuple[str, int]) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with _connect(addr) as raw, ctx.wrap_socket(raw) as s:
            s.do_handshake()
            return True
    except (OSError, ssl.SSLError):
        return False


def _tls_context(settings) -> ssl.SSLContext:
    ca, cert, key = settings.pem
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
    else:
        ctx.load_default_certs()
    ctx.set_alpn_protocols(["h2"])
    if cert is not None and hasattr(os, "memfd_create"):
        fds = [os.memfd_create("reel-tls"), os.memfd_create("reel-tls")]
        try:
            for fd, data in zip(fds, (cert, key)):
                os.write(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}",
                                password=lambda: b"")
        finally:
            for fd in fds:
                os.close(fd)
    return ctx


def _tls(settings, addr: Tuple[str, int], where: str) -> Optional[Diagnosis]:
    """_tls_probe, twice when it blames a client certificate: a reeld
    closing connections as it stops looks the same for a moment, and that
    diagnosis ends reconnects for good."""
    d = _tls_probe(settings, addr, where)
    if d is not None and d.cert_refused:
        time.sleep(0.2)
        again = _tls_probe(settings, addr, where)
        if again is None or not again.cert_refused:
            return again
    return d


def _tls_probe(settings, addr: Tuple[str, int], where: str) -> Optional[Diagnosis]:
    tls = settings.tls
    ca = "tls.ca" if tls.ca is not None else "the system's roots (no tls.ca)"
    name = tls.server_name or addr[0]
    try:
        ctx = _tls_context(settings)
    except (OSError, ssl.SSLError, ValueError):
        return None                     # connect() checked them; nothing to add
    try:
        with _connect(addr) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
            s.do_handshake()
            # TLS 1.3 judges the client's certificate after the client's
            # handshake is done: reeld then closes the connection rather
            # than send its HTTP/2 SETTINGS.
            s.settimeout(min(1.0, PROBE_SECONDS))
            try:
                if s.recv(9):
                    return None
            except (socket.timeout, ssl.SSLError):
                return None
            if tls.cert is None:
                return Diagnosis(f"reeld at {where} asks for a client certificate: give "
                                 "tls.cert and tls.key", True, cert_refused=True)
            return Diagnosis(f"reeld at {where} refused the client certificate in tls.cert: "
                             "is it signed by the CA of reeld's --tls-client-ca?", True,
                             cert_refused=True)
    except ssl.SSLCertVerificationError as e:
        why = e.verify_message or str(e)
        if "mismatch" in why:
            return Diagnosis(f"reeld's certificate at {where} does not name {name!r}: "
                             "connect by a name or address its certificate holds (its "
                             "subjectAltName), or set tls.server_name", True)
        return Diagnosis(f"reeld's certificate at {where} does not verify against {ca}: "
                         f"{why}", True)
    except ssl.SSLError as e:
        if _speaks_h2_in_clear(addr):
            return Diagnosis(f"reeld at {where} does not serve TLS: connect without "
                             "tls (and without REEL_TLS*)", True)
        return None
    except ConnectionRefusedError:
        return Diagnosis(f"nothing listens on {where}: is reeld running there?", False)
    except OSError:
        return None


def diagnose(settings) -> Optional[Diagnosis]:
    """What keeps settings' channel from connecting, found by looking at
    the server; None when nothing is wrong that this can tell (the server
    answered as the settings expect, or nothing answered)."""
    addr = host_port(settings.target)
    if addr is None:
        return None
    where = settings.target
    if settings.tls is not None:
        return _tls(settings, addr, where)
    try:
        _connect(addr).close()
    except ConnectionRefusedError:
        return Diagnosis(f"nothing listens on {where}: is reeld running there?", False)
    except OSError:
        return None
    if _speaks_tls(addr) and not _speaks_h2_in_clear(addr):
        return Diagnosis(f"reeld at {where} serves TLS: give tls=reel.TLS(ca=...) "
                         "(or REEL_TLS_CA, or REEL_TLS=1 for the system's roots)", True)
    return None


class Diagnoser:
    """One client's diagnoses: a look at the server at most every
    KEEP_SECONDS, however many calls and streams fail meanwhile."""

    def __init__(self, settings):
        self._s = settings
        self._mu = threading.Lock()
        self._at = -KEEP_SECONDS
        self._last: Optional[Diagnosis] = None

    def cached(self) -> Tuple[bool, Optional[Diagnosis]]:
        """(fresh, diagnosis): fresh when the last look is recent enough."""
        with self._mu:
            return time.monotonic() - self._at < KEEP_SECONDS, self._last

    def look(self) -> Optional[Diagnosis]:
        fresh, last = self.cached()
        if fresh:
            return last
        d = diagnose(self._s)
        with self._mu:
            self._at, self._last = time.monotonic(), d
        return d


def refusal(method: str, d: Optional[Diagnosis]):
    """The Unavailable a call on a channel that cannot connect by its
    settings' mistake d fails with at once (instead of waiting for a
    connection until its deadline); None when d is no such mistake."""
    if d is None or not d.config:
        return None
    from reel import errors
    err = errors.Unavailable(f"cannot connect ({d.hint})", method=method)
    err.settings_mistake = True
    return err


def explain(err, d: Optional[Diagnosis]):
    """err with d's hint after its message, and `config` set when the
    mistake is one of settings."""
    if d is not None and d.hint not in err.message:
        err.message = f"{err.message} ({d.hint})"
        err.args = (err.message,)
        err.settings_mistake = d.config
    return err


def settings_mistake(err) -> bool:
    return getattr(err, "settings_mistake", False)
