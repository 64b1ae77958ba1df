"""The static directory (GATEWAY_STATIC_DIR) over real HTTP, beside the echo backend's API: files with their
cache and security headers, the history-mode fallback, and API routes winning wherever they exist."""

import pytest
import yarl

from gateway.config import GatewayConfig
from gateway.static import CONTENT_SECURITY_POLICY, IMMUTABLE, REVALIDATE
from tests.test_gateway_transcoding import reason_of

INDEX = "<!doctype html><title>console</title><script type=module src=/assets/index-Ab12Cd34.js></script>"
SCRIPT = "console.log('hashed')"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A built single-page application, a file outside it, and a file where an API route is."""
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_text("outside the served directory")
    root = base / "site"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "index-Ab12Cd34.js").write_text(SCRIPT)
    (root / "robots.txt").write_text("User-agent: *")
    (root / "v1" / "echo").mkdir(parents=True)
    (root / "v1" / "echo" / "shadowed").write_text("a file where the API answers")
    return root


@pytest.fixture(scope="module")
async def site_url(start_gateway, echo_server, site):
    return await start_gateway({"echo": echo_server}, static_dir=str(site))


def assert_secured(response) -> None:
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/", "/books", "/books/7f1c/history", "/sign-in?next=%2Fbooks"])
async def test_pages_of_the_application_get_index_html_revalidated(http, site_url, path):
    async with http.get(site_url + path) as response:
        assert response.status == 200 and await response.text() == INDEX
        assert response.content_type == "text/html"
        assert response.headers["Cache-Control"] == REVALIDATE
        assert_secured(response)


async def test_hashed_assets_are_immutable_other_files_revalidated(http, site_url):
    async with http.get(f"{site_url}/assets/index-Ab12Cd34.js") as response:
        assert response.status == 200 and await response.text() == SCRIPT
        assert response.content_type in ("text/javascript", "application/javascript")
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert_secured(response)
        etag = response.headers["ETag"]
    async with http.get(f"{site_url}/assets/index-Ab12Cd34.js", headers={"If-None-Match": etag}) as response:
        assert response.status == 304
    async with http.get(f"{site_url}/robots.txt") as response:
        assert response.status == 200 and response.headers["Cache-Control"] == REVALIDATE


async def test_head_answers_without_a_body(http, site_url):
    async with http.head(f"{site_url}/") as response:
        assert response.status == 200 and await response.read() == b""
        assert response.headers["Content-Length"] == str(len(INDEX))


@pytest.mark.parametrize("path", ["/assets/missing-00000000.js", "/favicon.ico", "/v1/no-such-route"])
async def test_a_missing_file_or_api_path_is_a_json_404_not_the_page(http, site_url, path):
    async with http.get(site_url + path) as response:
        assert response.status == 404 and response.content_type == "application/json"
        assert reason_of(await response.json()) == "ROUTE_NOT_FOUND"


async def test_api_routes_win_over_files_and_keep_their_405(http, site_url):
    async with http.get(f"{site_url}/v1/echo/shadowed") as response:
        assert response.status == 200 and (await response.json())["id"] == "shadowed"
    async with http.delete(f"{site_url}/v1/echo/shadowed") as response:
        assert response.status == 405 and reason_of(await response.json()) == "METHOD_NOT_ALLOWED"
    async with http.get(f"{site_url}/healthz") as response:
        assert response.status == 200 and (await response.json())["status"] == "SERVING"
    async with http.post(f"{site_url}/", data=b"{}") as response:  # files are only read
        assert response.status == 404


@pytest.mark.parametrize("raw", ["/..%2Fsecret.txt", "/%2e%2e/secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt"])
async def test_nothing_outside_the_directory_is_served(http, site_url, raw):
    async with http.get(yarl.URL(site_url + raw, encoded=True)) as response:
        assert "outside the served directory" not in await response.text()


async def test_without_the_setting_no_directory_is_served(http, echo_gateway_url):
    async with http.get(f"{echo_gateway_url}/") as response:
        assert response.status == 404 and reason_of(await response.json()) == "ROUTE_NOT_FOUND"


def test_static_dir_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("GATEWAY_STATIC_DIR", str(tmp_path))
    assert GatewayConfig.from_env().static_dir == str(tmp_path)
    monkeypatch.setenv("GATEWAY_STATIC_DIR", "")
    assert GatewayConfig.from_env().static_dir == ""
