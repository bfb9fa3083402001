"""SIP digest authentication of INVITEs (RFC 3261 22, RFC 2617: MD5, with or without qop=auth).

MD5 only: it is what every SIP peer implements, and offering SHA-256 (RFC 8760) next to it makes some drop
the call (baresip 1.0 does). A password on SIP is a second fence; the allow-list stays the first.

Nonces are stateless: a timestamp with an HMAC under a per-process key, so a flood of unanswered
challenges costs no memory, and a nonce is good for `NONCE_SECONDS`. Secrets are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

NONCE_SECONDS = 300.0
_PARAM = re.compile(r'([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


class DigestAuth:
    def __init__(
        self, username: str, password: str, realm: str = "flowapp", clock: Callable[[], float] = time.time
    ) -> None:
        self.username = username
        self.password = password
        self.realm = realm
        self.clock = clock
        self._key = secrets.token_bytes(32)

    def challenges(self) -> list[str]:
        """`WWW-Authenticate` values for a 401."""
        nonce = self._nonce(int(self.clock()))
        return [f'Digest realm="{self.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"']

    def _nonce(self, stamp: int) -> str:
        mac = hmac.new(self._key, str(stamp).encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp:x}.{mac}"

    def verify(self, header: str | None, method: str) -> bool:
        """True when `header` (an `Authorization` value) proves the password for this request."""
        if header is None or header[:7].lower() != "digest ":
            return False
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _PARAM.finditer(header[7:])
        }
        nonce = params.get("nonce", "")
        stamp_hex, _, _ = nonce.partition(".")
        try:
            stamp = int(stamp_hex, 16)
        except ValueError:
            return False
        if not hmac.compare_digest(nonce, self._nonce(stamp)) or not 0 <= self.clock() - stamp <= NONCE_SECONDS:
            return False
        if params.get("algorithm", "MD5").upper() != "MD5" or params.get("realm") != self.realm:
            return False
        username, uri = params.get("username", ""), params.get("uri", "")

        def h(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = h(f"{username}:{self.realm}:{self.password}")
        ha2 = h(f"{method}:{uri}")
        qop = params.get("qop")
        if qop == "auth":
            expected = h(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}")
        elif qop is None:
            expected = h(f"{ha1}:{nonce}:{ha2}")
        else:
            return False
        user_ok = hmac.compare_digest(username.encode(), self.username.encode())
        return hmac.compare_digest(expected, params.get("response", "")) and user_ok
