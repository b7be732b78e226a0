"""Every response carries a strict Content-Security-Policy, pages obey it, and the API docs
are a local, pinned Swagger UI for signed-in users only.

The browser tests (tests/web/test_browser.py) run the pages under this policy in Chromium
and fail on any violation; here the policy and the markup are checked directly.
"""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser

import pytest
from django.conf import settings as django_settings
from django.contrib.staticfiles import finders
from django.test import Client
from rest_framework.test import APIClient

from explain import batches
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db

STRICT = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}


@pytest.fixture(autouse=True)
def own_cache(settings):
    settings.CACHES = {
        "default": {**django_settings.CACHES["default"], "KEY_PREFIX": f"t-{uuid.uuid4().hex}"}
    }


@pytest.fixture
def decisions(model_version, ingest):
    """Decisions with SHAP and LIME explanations, so the decision page draws its charts."""
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(3))]
    batches.run_batch(model_version.pk, "shap", ids)
    batches.run_batch(model_version.pk, "lime", ids)
    return ids


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = {}
    for part in header.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


def assert_strict(response) -> None:
    directives = policy(response)
    for name, sources in STRICT.items():
        assert directives.get(name) == sources, (name, response["Content-Security-Policy"])
    header = response["Content-Security-Policy"]
    assert "unsafe-" not in header and "http" not in header and "*" not in header


class Markup(HTMLParser):
    """What a strict policy would refuse in a page: inline scripts, handlers, styles."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self.loads: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        inert = attributes.get("type") in ("application/json", "text/template")  # not run
        if tag == "script" and not attributes.get("src") and not inert:
            self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("<style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=>")
            if name == "style":
                self.problems.append(f"<{tag} style=>")
            if (value or "").strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}=javascript:>")
        if tag in ("script", "img", "iframe") and attributes.get("src"):
            self.loads.append(attributes["src"])
        if tag == "link" and attributes.get("href"):
            self.loads.append(attributes["href"])


def scan(response) -> Markup:
    markup = Markup()
    markup.feed(response.content.decode())
    return markup


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


PAGES = [
    "/",
    "/decisions/?model=credit",
    "/decisions/{id}/",
    "/decisions/{id}/explanations",
    "/review/",
    "/models/",
    "/models/credit/versions/1/",
    "/monitoring/",
    "/models/credit/versions/1/monitoring/",
    "/audit/",
    "/reports/",
    "/api/docs/",
    "/admin/",
    "/admin/accounts/auditevent/",
]


class TestThePolicy:
    def test_every_page_carries_it_and_uses_nothing_it_refuses(self, admin, decisions):
        client = signed_in(admin)
        for url in PAGES:
            response = client.get(url.format(id=decisions[0]))
            assert response.status_code == 200, url
            assert_strict(response)
            markup = scan(response)
            assert markup.problems == [], (url, markup.problems)
            local = ("/static/", "data:", "/api/docs/?script=")  # see TestApiDocs
            assert all(load.startswith(local) for load in markup.loads), (url, markup.loads)

    def test_pages_for_everyone_and_errors_carry_it_too(self, admin):
        anonymous = Client()
        for url, status in (
            ("/accounts/login/", 200),
            ("/admin/login/", 200),
            ("/no-such-page/", 404),
            ("/", 302),
        ):
            response = anonymous.get(url)
            assert response.status_code == status, url
            assert_strict(response)
        refused = signed_in(admin).get("/decisions/999999/")
        assert refused.status_code == 404
        assert_strict(refused)
        assert scan(anonymous.get("/accounts/login/")).problems == []

    def test_the_lockout_page_carries_it(self, auditor):
        for _ in range(django_settings.AXES_FAILURE_LIMIT):
            response = Client().post(
                "/accounts/login/",
                {"username": "auditor", "password": "wrong"},
                REMOTE_ADDR="192.0.2.60",
            )
        assert response.status_code == 429
        assert_strict(response)
        assert scan(response).problems == []

    def test_api_responses_carry_it(self, token_client, compliance_officer, decisions):
        client, _ = token_client(compliance_officer, ["read"])
        for response in (
            client.get("/api/v1/decisions"),
            client.get("/api/v1/models"),
            client.get("/api/schema/"),
            APIClient().get("/api/v1/decisions"),  # 401
            client.get("/api/v1/decisions/999999"),  # 404
        ):
            assert_strict(response)

    def test_htmx_runs_without_eval_or_inline_styles(self, auditor):
        page = signed_in(auditor).get("/").content.decode()
        (config,) = re.findall(r"<meta name=\"htmx-config\" content='([^']*)'>", page)
        assert '"allowEval": false' in config
        assert '"includeIndicatorStyles": false' in config


class TestApiDocs:
    def test_the_schema_is_refused_to_anonymous_callers(self):
        as_json = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")
        assert as_json.status_code == 401
        assert as_json.json()["error"]["code"] == "not_authenticated"
        as_yaml = APIClient().get("/api/schema/")  # the schema's default format
        assert as_yaml.status_code == 401
        assert b"not_authenticated" in as_yaml.content
        assert b"openapi" not in as_yaml.content and b"/api/v1/" not in as_yaml.content

    def test_the_docs_send_anonymous_visitors_to_sign_in(self):
        for url in ("/api/docs/", "/api/docs/?script="):
            response = Client().get(url)
            assert response.status_code == 302
            assert response["Location"].startswith("/accounts/login/?next=/api/docs/")

    def test_signed_in_users_and_tokens_get_the_schema(self, token_client, auditor):
        client, _ = token_client(auditor, ["read"])
        assert client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["openapi"]
        response = signed_in(auditor).get("/api/schema/", HTTP_ACCEPT="application/json")
        assert "/api/v1/decisions" in response.json()["paths"]

    def test_the_docs_page_loads_swagger_ui_from_static_files_only(self, auditor):
        client = signed_in(auditor)
        response = client.get("/api/docs/")

        html = response.content.decode()
        assert "http://" not in html and "https://" not in html
        markup = scan(response)
        assert markup.problems == []
        scripts = [load for load in markup.loads if load.endswith(".js")]
        assert scripts == [
            "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
            "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-standalone-preset.js",
        ]
        static = [load for load in markup.loads if load.startswith(django_settings.STATIC_URL)]
        assert set(markup.loads) - set(static) == {"/api/docs/?script="}
        for load in static:
            path = load.removeprefix(django_settings.STATIC_URL)
            assert finders.find(path), load  # shipped with the pinned package, not fetched
        # The start-up code is a script file of the view itself (?script), not inline.
        (start,) = re.findall(r'<script src="(/api/docs/\?script=)"></script>', html)
        script = client.get(start)
        assert script.status_code == 200
        assert script["Content-Type"].startswith("application/javascript")
        assert 'url: "/api/schema/"' in script.content.decode()
        assert "validatorUrl" in script.content.decode()  # no badge from the public validator
