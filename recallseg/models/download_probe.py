"""Whether a server answers, asked with a deadline before a download that would not keep one."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

# Download clients wait on a machine without network: the Hugging Face client retries for
# 20-70 s, urllib (torch's hub) waits for the system's connect timeout, about 2 minutes.
PROBE_SECONDS = 3.0


def reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to ``url``'s host and port opens within ``timeout`` seconds, name
    lookup included (in a thread: a lookup cannot be given a timeout). Where the environment names a
    proxy for ``url`` (``https_proxy``, ``no_proxy``), downloads go through it, so the proxy is asked."""
    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    answered, opened = threading.Event(), []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                opened.append(True)
        except OSError:
            pass
        finally:
            answered.set()

    threading.Thread(target=probe, daemon=True).start()
    answered.wait(timeout)
    return bool(opened)
