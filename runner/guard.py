"""The address guard of the download child: every connection goes to a permitted address.

It is a Python audit hook (PEP 578) installed before yt-dlp is imported, so it sees every
`socket.connect` in the process, whichever library opens it — yt-dlp's urllib and requests
handlers, each redirect, each playlist entry and fragment — with the numeric address actually
connected to, after DNS: a name that resolves (or re-binds) to a private address is caught
where it matters. Audit hooks cannot be removed, so nothing later in the process undoes it.

It also refuses to start programs: yt-dlp would otherwise hand some streams to ffmpeg, which
fetches URLs itself where no hook can see. yt-dlp is told not to need one (native HLS/DASH
downloader, no fixups), and a library that tries anyway gets PermissionError.

Only the download child runs under the guard. The runner process itself talks to the
Kubernetes API (a private address) and to the operator's S3 endpoint, neither of which a
payload can choose.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Iterable
from typing import Any

from runner.errors import exception_chain
from runner.rules import IPAddress, NetworkRules, refused_sentence, unwrap

_CONNECT_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"}
)
_INET = (socket.AF_INET, socket.AF_INET6)


class AddressRefused(PermissionError):
    """A connection the rules refuse; `str()` is the row's sentence."""


class SpawnRefused(PermissionError):
    """A program the download child may not start (it could fetch past the guard)."""


class Guard:
    def __init__(self, url: str, rules: NetworkRules) -> None:
        self.url = url
        self.rules = rules
        self.refused: AddressRefused | None = None
        """The first refusal, kept because a library may flatten the exception to text."""
        self._allowed_pairs: set[tuple[str, int]] = set()
        # Per thread (fragments may download in parallel): whether the guard itself is
        # resolving, and the name the thread last resolved, which its next connect is for.
        self._thread = threading.local()

    def install(self) -> None:
        sys.addaudithook(self._hook)

    def refusal_in(self, exc: BaseException) -> AddressRefused | None:
        """The refusal behind a failure, if the guard caused it."""
        found = next((e for e in exception_chain(exc) if isinstance(e, AddressRefused)), None)
        return found or self.refused

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if getattr(self._thread, "busy", False):
            return  # the guard's own lookups
        if event == "socket.getaddrinfo":
            self._resolving(args[0], args[1])
        elif event in _CONNECT_EVENTS:
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) in _INET and address is not None:
                self._connecting(address)
        elif event in _SPAWN_EVENTS:
            raise SpawnRefused(
                f"the download may not start programs ({event}): they could fetch past the "
                "address guard"
            )

    def _resolving(self, host: object, port: object) -> None:
        name = host.decode(errors="replace") if isinstance(host, bytes) else host
        if not isinstance(name, str) or not name:
            return
        self._thread.last_host = name
        number = int(port) if isinstance(port, int | str) and str(port).isdigit() else None
        if number is not None and self.rules.allows_endpoint(name, number):
            # An allowed host:port: whatever it resolves to may be connected to on that port.
            for ip in self._lookup(name, number):
                self._allowed_pairs.add((str(ip), number))

    def _lookup(self, host: str, port: int) -> Iterable[IPAddress]:
        self._thread.busy = True
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return []
        finally:
            self._thread.busy = False
        return [unwrap(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])) for info in infos]

    def _connecting(self, address: tuple[Any, ...]) -> None:
        host, port = str(address[0]), int(address[1])
        try:
            ips = [unwrap(ipaddress.ip_address(host.split("%", 1)[0]))]
            name = getattr(self._thread, "last_host", None) or host
        except ValueError:
            ips, name = list(self._lookup(host, port)), host  # connect() given a name
        for ip in ips:
            if (str(ip), port) in self._allowed_pairs:
                continue
            reason = self.rules.refusal(ip, port)
            if reason is not None:
                error = AddressRefused(refused_sentence(self.url, name, ip, reason))
                self.refused = self.refused or error
                raise error
