"""A static directory served beside the API (GATEWAY_STATIC_DIR): files, a history-mode fallback, cache and
security headers.

The gateway knows nothing of what the directory holds; it only serves what no API route claims:
- a file under the directory, as it is (ETag, Last-Modified, Range and HEAD come from aiohttp's FileResponse);
- otherwise `index.html`, when the path looks like a page of a single-page application: its first segment is
  no API namespace (`/api/...` stays a JSON 404; `Router.namespaces`) and its last has no dot (a missing
  `app.js` is a 404, not HTML).
"""

from pathlib import Path

from aiohttp import web

INDEX = "index.html"
# Vite writes every built file under assets/ (its default build.assetsDir) with a content hash in the name, so
# such a file never changes: caches may keep it a year. Anything else, index.html above all, is revalidated
# each time, so a new build is picked up at once.
HASHED_DIR = "assets"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# No inline script or style, no eval, nothing from another origin; the page may call only its own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
}


class StaticSite:
    def __init__(self, directory: str):
        self.root = Path(directory).resolve()

    def file_for(self, raw_path: str) -> Path | None:
        """The file a request path names inside the directory, or None (also for `..` escapes and symlinks out)."""
        relative = raw_path.lstrip("/")
        if not relative:
            return None
        try:
            candidate = (self.root / relative).resolve()
            if not candidate.is_relative_to(self.root) or not candidate.is_file():
                return None
        except (OSError, ValueError):  # a NUL byte, a name too long for the file system
            return None
        return candidate

    def response(self, path: str, api_namespaces: set[str]) -> web.StreamResponse | None:
        """The answer for a GET or HEAD no API route took, or None when the directory has nothing for it."""
        found = self.file_for(path)
        if found is not None:
            cache = IMMUTABLE if found.parent == self.root / HASHED_DIR else REVALIDATE
            return _file(found, cache)
        segments = path.strip("/").split("/")
        if segments[0] in api_namespaces or "." in segments[-1]:
            return None
        index = self.root / INDEX
        return _file(index, REVALIDATE) if index.is_file() else None


def _file(path: Path, cache_control: str) -> web.FileResponse:
    response = web.FileResponse(path, headers={"Cache-Control": cache_control, **SECURITY_HEADERS})
    if path.name == INDEX:
        response.content_type = "text/html"
        response.charset = "utf-8"
    return response
