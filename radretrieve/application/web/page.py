"""The static pages (`static/*.html`, package data): served as they are, with a Content-Security-Policy.

Each page is one self-contained file: its CSS in one `<style>` element, its code in one `<script>` element,
nothing from another origin. The policy allows exactly those two blocks (by their SHA-256), images and
requests from this server, and nothing else, so even a bug that let text from the index become markup could
not run a script.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from fastapi.responses import HTMLResponse

_BLOCK = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(html: str) -> str:
    """The CSP header for `html`: its inline `<script>`/`<style>` blocks by hash, same-origin otherwise."""
    scripts = [_hash(body) for tag, body in _BLOCK.findall(html) if tag == "script"]
    styles = [_hash(body) for tag, body in _BLOCK.findall(html) if tag == "style"]
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + (" ".join(scripts) or "'none'"),
            "style-src " + (" ".join(styles) or "'none'"),
            "img-src 'self' data:",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


@dataclass(frozen=True)
class StaticPage:
    """One HTML file of the package and its policy."""

    html: str  # the document
    csp: str  # its Content-Security-Policy

    @staticmethod
    def load(name: str) -> StaticPage:
        html = resources.files("radretrieve.application.web").joinpath("static", name).read_text(encoding="utf-8")
        return StaticPage(html, content_security_policy(html))

    def response(self, status_code: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
        return HTMLResponse(self.html, status_code, headers={"Content-Security-Policy": self.csp, **(headers or {})})
