"""The search form's model-dependent filters: pick-lists from the version's schema.

`/decisions/filters` renders them alone (the model select asks for them with htmx);
the search page renders the same fieldset, so the page works without JavaScript.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import sklearn.base
import skops.io

from auditapp.demo.credit import FEATURES
from auditapp.registry.models import ModelVersion
from tests.factories import DecisionPayloadFactory, credit_schema

pytestmark = pytest.mark.django_db


class Form(HTMLParser):
    """The selects (name -> [(value, text, selected)]) and inputs (name -> attributes)."""

    def __init__(self, html: str):
        super().__init__()
        self.selects: dict[str, list[tuple[str, str, bool]]] = {}
        self.inputs: dict[str, dict[str, str | None]] = {}
        self._select: str | None = None
        self._option: list | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "select":
            self._select = attributes["name"]
            self.selects[self._select] = []
        elif tag == "option" and self._select:
            self._option = [attributes.get("value"), "", "selected" in attributes]
        elif tag == "input":
            self.inputs[attributes["name"]] = attributes

    def handle_data(self, data):
        if self._option is not None:
            self._option[1] += data

    def handle_endtag(self, tag):
        if tag == "option" and self._option is not None:
            value, text, selected = self._option
            self.selects[self._select].append((value, text.strip(), selected))
            self._option = None
        elif tag == "select":
            self._select = None

    def options(self, name: str) -> list[tuple[str, str]]:
        return [(value, text) for value, text, _ in self.selects[name]]

    def selected(self, name: str) -> list[str]:
        return [value for value, _, selected in self.selects[name] if selected]


def filters(client, **params):
    response = client.get("/decisions/filters", params)
    assert response.status_code == 200, response.content
    return response


@pytest.fixture
def officer(client, compliance_officer, model_version):
    client.force_login(compliance_officer)
    return client


def test_a_models_filters_are_its_classes_features_and_categories(officer, model_version):
    form = Form(filters(officer, model="credit").content.decode())
    schema = model_version.parsed_schema

    assert form.options("prediction") == [
        ("", "any"),
        ("good", "good (approved)"),  # the schema's favourable class
        ("bad", "bad (declined)"),
    ]
    assert form.options("top_reason") == [("", "any")] + [
        (f.name, f.label) for f in schema.features
    ]
    assert form.options("version") == [("", "any"), ("1", "1 (staging)")]
    for feature in schema.features:
        if feature.type == "categorical":
            assert form.options(f"feature.{feature.name}") == [("", "any")] + [
                (c, c) for c in feature.categories
            ]
    assert form.options("feature.has_guarantor") == [("", "any"), ("true", "yes"), ("false", "no")]
    loan = form.inputs["feature.loan_amount__gte"]
    assert (loan["type"], loan["min"], loan["max"], loan["step"]) == (
        "number",
        "500",
        "100000",
        "any",
    )
    assert form.inputs["feature.age__lte"]["step"] == "1"  # an integer feature
    numeric = [f.name for f in schema.features if f.type in ("numeric", "integer")]
    assert set(form.inputs) == {f"feature.{f}__{b}" for f in numeric for b in ("gte", "lte")}


def test_the_prediction_is_free_text_without_a_model(officer):
    html = filters(officer, prediction="bad").content.decode()
    form = Form(html)

    assert form.inputs["prediction"]["value"] == "bad"
    assert form.inputs["version"]["value"] == ""
    assert form.selects == {} and "Filter by input features" not in html


def test_a_unit_shows_beside_its_bounds(officer, register, ml_engineer):
    schema = credit_schema()
    for spec in schema["features"]:
        if spec["name"] == "debt_ratio":
            spec.update(unit="%", decimals=2)
    register(ml_engineer, version="2", schema=schema)

    response = filters(officer, model="credit")
    form = Form(response.content.decode())

    assert "Debt-to-income ratio from (%)" in response.content.decode()
    assert form.inputs["feature.debt_ratio__gte"]["step"] == "any"


def test_chosen_values_are_selected_again(officer):
    params = {
        "model": "credit",
        "version": "1",
        "prediction": "bad",
        "top_reason": "debt_ratio",
        "feature.housing": "rent",
        "feature.has_guarantor": "true",
        "feature.age__gte": "30",
        "feature.age__lte": "45",
    }
    for response in (filters(officer, **params), officer.get("/decisions/", params)):
        form = Form(response.content.decode())
        assert form.selected("version") == ["1"]
        assert form.selected("prediction") == ["bad"]
        assert form.selected("top_reason") == ["debt_ratio"]
        assert form.selected("feature.housing") == ["rent"]
        assert form.selected("feature.has_guarantor") == ["true"]
        assert form.inputs["feature.age__gte"]["value"] == "30"
        assert form.inputs["feature.age__lte"]["value"] == "45"
        assert '<details class="features" open>' in response.content.decode()


def test_a_new_model_drops_the_values_it_does_not_offer_the_page_shows_them(officer):
    params = {
        "model": "credit",
        "prediction": "maybe",
        "top_reason": "shoe_size",
        "feature.housing": "castle",
    }

    fitted = Form(filters(officer, **params).content.decode())
    shown = Form(officer.get("/decisions/", params).content.decode())

    for name in ("prediction", "top_reason", "feature.housing"):
        assert fitted.selected(name) == []
        assert shown.selected(name) == [params[name]]  # what the results were filtered by
    assert ("maybe", "maybe (not of this model)") in shown.options("prediction")


def test_without_javascript_the_page_renders_the_same_filters(officer):
    params = {"model": "credit", "prediction": "good", "feature.loan_purpose": "car"}

    alone = filters(officer, **params).content.decode()
    page = officer.get("/decisions/", params).content.decode()

    start = page.index('<fieldset id="model-filters"')
    assert page[start : start + len(alone.strip())] == alone.strip()


def test_htmx_is_told_to_search_again_once_the_filters_are_in(officer):
    plain = filters(officer, model="credit")
    asked = officer.get("/decisions/filters", {"model": "credit"}, HTTP_HX_REQUEST="true")

    assert "HX-Trigger-After-Settle" not in plain.headers
    assert asked.headers["HX-Trigger-After-Settle"] == "filters-changed"
    assert asked.content == plain.content


def test_the_model_select_fetches_the_filters_without_inline_script(officer):
    html = officer.get("/decisions/").content.decode()

    assert (
        '<select name="model" hx-get="/decisions/filters" hx-trigger="change consume" '
        'hx-include="closest form" hx-target="#model-filters" hx-swap="outerHTML">'
    ) in html
    assert 'hx-trigger="change, submit, filters-changed"' in html
    assert "onchange" not in html and "<script>" not in html


# --- who sees what ------------------------------------------------------------------


def test_a_hidden_model_answers_exactly_as_a_missing_one(client, outsider, model_version, ingest):
    ingest(DecisionPayloadFactory())
    client.force_login(outsider)  # a domain expert not assigned to credit
    params = {"prediction": "bad", "top_reason": "income", "feature.income__gte": "1"}

    hidden = client.get("/decisions/filters", {"model": "credit", **params})
    missing = client.get("/decisions/filters", {"model": "no-such-model", **params})

    assert hidden.status_code == missing.status_code == 200
    assert hidden.content == missing.content
    assert hidden.headers.items() == missing.headers.items()
    assert "Annual income" not in hidden.content.decode()
    assert Form(hidden.content.decode()).selects == {}


def test_an_assigned_domain_expert_gets_the_models_filters(client, domain_expert, model_version):
    client.force_login(domain_expert)

    form = Form(filters(client, model="credit").content.decode())

    assert [value for value, _ in form.options("prediction")] == ["", "good", "bad"]


def test_an_auditor_is_not_offered_masked_features(
    client, auditor, compliance_officer, model_version
):
    sensitive = model_version.parsed_schema.sensitive_names
    assert sensitive == {"income", "sex"}

    client.force_login(auditor)
    response = filters(client, model="credit")
    form = Form(response.content.decode())
    reasons = {value for value, _ in form.options("top_reason")}
    fields = [name for name in [*form.selects, *form.inputs] if name.startswith("feature.")]
    features = {name.removeprefix("feature.").split("__")[0] for name in fields}

    assert reasons and not reasons & sensitive
    assert features and not features & sensitive
    assert "Annual income" not in response.content.decode()
    # ... nor on the page a reload renders
    page = Form(client.get("/decisions/", {"model": "credit"}).content.decode())
    assert not {value for value, _ in page.options("top_reason")} & sensitive

    client.force_login(compliance_officer)
    form = Form(filters(client, model="credit").content.decode())
    assert sensitive <= {value for value, _ in form.options("top_reason")}
    assert "feature.sex" in form.selects and "feature.income__gte" in form.inputs


def test_a_feature_sensitive_in_another_model_is_not_offered_as_a_reason(
    client, auditor, model_version, register, ml_engineer
):
    """The top_reason search refuses a feature any visible model marks sensitive."""
    schema = credit_schema()
    for spec in schema["features"]:
        if spec["name"] == "housing":
            spec["sensitive"] = True
    register(ml_engineer, name="credit-2", schema=schema)
    client.force_login(auditor)

    form = Form(filters(client, model="credit").content.decode())

    assert "housing" not in {value for value, _ in form.options("top_reason")}
    assert "feature.housing" in form.selects  # not sensitive in credit itself
    assert client.get("/decisions/", {"top_reason": "housing"}).status_code == 403


def test_signed_out_and_roleless_users_get_nothing(client, no_role, model_version):
    assert client.get("/decisions/filters", {"model": "credit"}).status_code == 302
    client.force_login(no_role)
    assert client.get("/decisions/filters", {"model": "credit"}).status_code == 403


def test_control_characters_are_refused(officer):
    response = officer.get("/decisions/filters", {"model": "credit", "prediction": "a\x00b"})
    assert response.status_code == 400


def test_a_searchs_results_follow_the_chosen_prediction(officer, ingest):
    payloads = DecisionPayloadFactory.build_batch(10)
    ingest(*payloads)
    bad = {p["request_id"] for p in payloads if p["prediction"] == "bad"}

    response = officer.get("/decisions/", {"model": "credit", "prediction": "bad"})

    assert {d.request_id for d, *_ in response.context["results"]} == bad
    assert Form(response.content.decode()).selected("prediction") == ["bad"]


def test_the_form_reads_the_newest_versions_schema(officer, register, ml_engineer):
    schema = credit_schema()
    schema["target"]["wording"] = {"good": "granted", "bad": "refused"}
    register(ml_engineer, version="2", schema=schema)
    assert ModelVersion.objects.filter(registered_model__name="credit").count() == 2

    form = Form(filters(officer, model="credit").content.decode())

    assert form.options("prediction")[1:] == [("good", "good (granted)"), ("bad", "bad (refused)")]
    assert [value for value, _ in form.options("version")] == ["", "2", "1"]


def test_a_model_whose_classes_are_integers_is_searched_by_its_select(
    officer, register, ml_engineer, ingest, credit_pipeline, credit_frame
):
    """A query string has no types: prediction=1 finds the integer class 1."""
    pipeline = sklearn.base.clone(credit_pipeline).fit(
        credit_frame[FEATURES], (credit_frame["outcome"] == "bad").astype(int)
    )
    schema = credit_schema()
    schema["target"] = {
        "type": "classification",
        "classes": [0, 1],
        "positive_class": 1,
        "favourable": 0,
        "wording": {"0": "approved", "1": "declined"},
    }
    register(ml_engineer, name="numbered", schema=schema, artifact=skops.io.dumps(pipeline))
    payloads = [
        DecisionPayloadFactory(model="numbered", prediction=int(n % 3 == 0)) for n in range(9)
    ]
    ingest(*payloads)

    form = Form(filters(officer, model="numbered").content.decode())
    response = officer.get("/decisions/", {"model": "numbered", "prediction": "1"})

    assert form.options("prediction") == [("", "any"), ("0", "0 (approved)"), ("1", "1 (declined)")]
    assert {d.request_id for d, *_ in response.context["results"]} == {
        p["request_id"] for p in payloads if p["prediction"] == 1
    }
    assert Form(response.content.decode()).selected("prediction") == ["1"]
    api = officer.get("/api/v1/decisions", {"model": "numbered", "prediction": "0"}).json()
    assert len(api["results"]) == 6 and {d["prediction"] for d in api["results"]} == {0}


def test_a_top_reason_searched_without_a_model_stays_on_the_form(officer):
    page = Form(officer.get("/decisions/", {"top_reason": "debt_ratio"}).content.decode())
    fitted = Form(filters(officer, top_reason="debt_ratio").content.decode())

    assert page.options("top_reason") == [("", "any"), ("debt_ratio", "debt_ratio")]
    assert page.selected("top_reason") == ["debt_ratio"]
    assert "top_reason" not in fitted.selects  # no model: nothing to choose a reason from
