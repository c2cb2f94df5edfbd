"""/api/docs works offline: Swagger UI's assets come from our static files, never a CDN."""

from __future__ import annotations

import re
import urllib.request

import pytest
from django.test import Client

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


def _asset_urls(html: str) -> list[str]:
    return ASSET.findall(html)


@pytest.mark.django_db
def test_docs_page_references_only_local_assets():
    response = Client().get("/api/docs")
    assert response.status_code == 200
    urls = _asset_urls(response.content.decode())
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls), urls
    assert any(u.endswith("swagger-ui.css") for u in urls), urls
    remote = [u for u in urls if re.match(r"^(https?:)?//", u)]
    assert remote == [], f"docs page loads assets from elsewhere: {remote}"
    assert all(u.startswith("/static/") for u in urls), urls


@pytest.mark.django_db(transaction=True)
def test_every_docs_asset_is_served(live_server):
    html = urllib.request.urlopen(f"{live_server.url}/api/docs", timeout=30).read()
    urls = _asset_urls(html.decode())
    assert urls
    for url in urls:
        with urllib.request.urlopen(f"{live_server.url}{url}", timeout=30) as asset:
            assert asset.status == 200, url
            assert len(asset.read()) > 100, url
