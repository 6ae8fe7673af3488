"""The web app's files (web/dist, built by `make install`), served at `/` by the local front
door with the same Content-Security-Policy CloudFront sends on AWS (template.yaml)."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import urlsplit

WEB_DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
INDEX = "index.html"
ASSETS = "/app/"


def is_web_path(method: str, path: str) -> bool:
    """The page (`/`, `/index.html`) and its files under `/app/`: no API route lives there."""
    return method in ("GET", "HEAD") and (path in ("/", f"/{INDEX}") or path.startswith(ASSETS))


def content_security_policy(files_base_url: str) -> str:
    """Scripts and styles from the page's origin only (no inline code), pictures from it and from
    where signed result URLs point, API calls to the page's origin."""
    parts = urlsplit(files_base_url)
    files = f" {parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' data: blob:{files}; connect-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def security_headers(files_base_url: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(files_base_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def resolve(path: str, root: Path | None = None) -> Path | None:
    """The file a web path names inside `root` (the built folder); None if there is none (or
    the path leaves it)."""
    relative = INDEX if path in ("/", f"/{INDEX}") else path.lstrip("/")
    base = (root or WEB_DIST).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def content_type(target: Path) -> str:
    if target.suffix == ".js":
        return "text/javascript; charset=utf-8"
    guessed = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed
