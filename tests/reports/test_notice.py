"""Decision notices: the top adverse SHAP reasons, plain labels, deterministic content."""

from __future__ import annotations

import orjson
import pytest

from auditapp.decisions.models import Decision
from auditapp.hashing import sha256_hex
from auditapp.reports.models import Report
from auditapp.reviews import rules
from auditapp.reviews.models import ReviewCase
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory, credit_schema
from tests.reports.conftest import explain, pdf_text, read_file

pytestmark = pytest.mark.django_db
PROTECTED = {"age", "sex"}  # the demo schema's protected inputs


@pytest.fixture
def explained(model_version, ingest):
    """Thirty decisions with their SHAP explanations (enough for some to have more than
    four unprotected features pushing towards "bad")."""
    results = ingest(*DecisionPayloadFactory.build_batch(30))
    ids = [r["id"] for r in results]
    explain(ids, model_version)
    return ids


def notice_body(decision_id: int, fmt: str = "json") -> dict:
    return {"kind": "decision_notice", "decision_id": decision_id, "format": fmt}


def expected_reasons(decision_id: int, labels: dict[str, str], protected=PROTECTED) -> list[str]:
    """Independently: the features pushing towards "bad", largest first, at most four,
    protected attributes left out."""
    attributions = Explanation.objects.get(decision_id=decision_id, method="shap").attributions
    floor = 0.01 * sum(abs(v) for v in attributions.values())  # a push under 1 % is no reason
    pushing = sorted(
        (v, n) for n, v in attributions.items() if v > 0 and v >= floor and n not in protected
    )
    return [labels[n] for _, n in pushing[::-1][:4]]


def test_a_notice_lists_exactly_the_top_adverse_shap_features_in_order(
    explained, model_version, generate
):
    labels = {f.name: f.label for f in model_version.parsed_schema.features}
    counts = set()
    for decision_id in explained:
        report = generate(notice_body(decision_id))
        notice = orjson.loads(read_file(report))["data"]

        reasons = [r["factor"] for r in notice["reasons"]]
        assert reasons == expected_reasons(decision_id, labels)
        assert [r["rank"] for r in notice["reasons"]] == list(range(1, len(reasons) + 1))
        assert all(r["direction"] == "raised the risk of “bad”" for r in notice["reasons"])
        for r in notice["reasons"]:
            assert r["text"] == f"{r['factor']} = {r['value']} — raised the risk of “bad”"
        counts.add(len(reasons))
    assert max(counts) == 4  # some decisions have more than four adverse features: cut to four


def test_a_notice_says_what_took_part_and_how_to_contest_without_raw_weights_or_codes(
    explained, model_version, generate, settings
):
    decision_id = explained[0]
    report = generate(notice_body(decision_id))
    text = read_file(report).decode()
    notice = orjson.loads(text)["data"]

    assert notice["automated_decision"] is True
    assert notice["model"] == {
        "name": "credit",
        "version": "1",
        "purpose": "Consumer credit default risk.",
    }
    prediction = Decision.objects.get(pk=decision_id).prediction
    assert notice["outcome"] == {"good": "approved", "bad": "declined"}[prediction]
    assert notice["human_review"].startswith("You have the right to have this decision reviewed")
    assert f"D-{decision_id:08d}" in notice["human_review"]
    assert notice["reference"] == f"D-{decision_id:08d}"
    assert notice["data_used"] == [f.label for f in model_version.parsed_schema.features]
    assert notice["contest"] == settings.ATTEST_CONTEST_TEXT
    shap = Explanation.objects.get(decision_id=decision_id, method="shap")
    for value in shap.attributions.values():
        assert repr(value) not in text  # no raw weights
    for code in ("debt_ratio", "employment_years", "prior_defaults", "has_guarantor"):
        assert code not in text  # plain labels, not the schema's internal names
    assert "request_id" not in text and "loan-" not in text


def test_the_same_notice_twice_has_the_same_content_hash_and_the_same_files(explained, generate):
    decision_id = explained[1]
    first, second = (generate(notice_body(decision_id, "json")) for _ in range(2))
    pdf_a, pdf_b = (generate(notice_body(decision_id, "pdf")) for _ in range(2))

    assert first.pk != second.pk
    assert first.content_sha256 == second.content_sha256 == pdf_a.content_sha256
    assert sha256_hex(orjson.loads(read_file(first))["data"]) == first.content_sha256
    assert first.sha256 == second.sha256  # the JSON file is byte-identical
    assert pdf_a.sha256 == pdf_b.sha256  # and so is the PDF (no creation date, no random id)


def test_the_pdf_notice_shows_the_reasons_in_order_and_the_content_hash(
    explained, model_version, generate
):
    decision_id = explained[2]
    report = generate(notice_body(decision_id, "pdf"))
    text = " ".join(pdf_text(report).split())
    labels = {f.name: f.label for f in model_version.parsed_schema.features}

    assert "An automated model took part" in text
    assert f"D-{decision_id:08d}" in text
    assert report.content_sha256 in text
    positions = [text.index(f"{label} = ") for label in expected_reasons(decision_id, labels)]
    assert positions == sorted(positions)
    assert "How to contest this decision" in text


def test_a_notice_for_a_decision_not_explained_yet_is_a_conflict(
    decision, api_client, compliance_officer
):
    response = api_client(compliance_officer).post(
        "/api/v1/reports", notice_body(decision.pk), format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_explained"
    assert not Report.objects.exists()


def top_four_towards_bad(decision_id: int) -> list[str]:
    attributions = Explanation.objects.get(decision_id=decision_id, method="shap").attributions
    floor = 0.01 * sum(abs(v) for v in attributions.values())
    pushing = sorted((v, n) for n, v in attributions.items() if v > 0 and v >= floor)
    return [n for _, n in pushing[::-1][:4]]


def test_a_notice_never_cites_a_protected_attribute_and_its_decision_is_queued(
    model_version, ingest, generate
):
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(40))]
    explain(ids, model_version)
    schema = model_version.parsed_schema
    features = {f.name: f for f in schema.features}
    labels = {f.name: f.label for f in schema.features}
    declined = Decision.objects.filter(pk__in=ids, prediction="bad")
    hits = [d for d in declined if PROTECTED & set(top_four_towards_bad(d.pk))]
    assert hits, "the fixture should hold a declined decision resting on age or sex"

    decision = hits[0]
    notice = orjson.loads(read_file(generate(notice_body(decision.pk))))["data"]

    factors = [r["factor"] for r in notice["reasons"]]
    assert factors == expected_reasons(decision.pk, labels)
    assert 1 <= len(factors) <= 4
    assert not {"Age (years)", "Sex"} & set(factors)
    for reason in notice["reasons"]:
        name = next(n for n, label in labels.items() if label == reason["factor"])
        assert reason["value"] == features[name].format_value(decision.full_inputs()[name])
        assert reason["text"].startswith(f"{reason['factor']} = {reason['value']} — ")
    assert notice["outcome"] == "declined"
    assert "reviewed by a person" in notice["human_review"]

    # Every declined decision resting on a protected attribute, and only those, is queued
    # with the named rule.
    queued = {
        c.decision_id: c
        for c in ReviewCase.objects.filter(decision_id__in=ids)
        if rules.PROTECTED_REASON in [r["rule"] for r in c.reasons]
    }
    assert set(queued) == {d.pk for d in hits}
    (why,) = [r for r in queued[decision.pk].reasons if r["rule"] == rules.PROTECTED_REASON]
    named = [labels[n] for n in top_four_towards_bad(decision.pk) if n in PROTECTED]
    assert why["detail"].startswith(f"{', '.join(named)} among the main reasons for “bad”")


def test_a_schema_without_favourable_keeps_the_class_as_the_outcome(
    register, ml_engineer, ingest, generate
):
    schema = credit_schema()
    del schema["target"]["favourable"]
    version = register(ml_engineer, version="2", schema=schema)
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(6, version="2"))]
    explain(ids, version)
    labels = {f.name: f.label for f in version.parsed_schema.features}

    for decision in Decision.objects.filter(pk__in=ids):
        notice = orjson.loads(read_file(generate(notice_body(decision.pk))))["data"]
        assert notice["outcome"] == decision.prediction  # as before: the class itself
        assert [r["factor"] for r in notice["reasons"]] == expected_reasons(decision.pk, labels)
        assert all(r["direction"] == "raised the risk of “bad”" for r in notice["reasons"])


def test_a_notice_of_an_erased_decision_does_not_say_its_values_were_not_given(
    explained, model_version, generate, api_client, compliance_officer
):
    """After an erasure every reason read "Debt-to-income ratio = not given": the person
    had given it; it was erased. The notice, and the decision's reasons in the API, now
    say so and show no value."""
    from auditapp.accounts import roles
    from auditapp.decisions import erasure
    from auditapp.decisions.models import Erasure

    decision_id = next(
        pk for pk in explained if expected_reasons(pk, {f: f for f in credit_schema_names()})
    )
    plan = erasure.plan_erasure(
        Decision.objects.filter(pk=decision_id), cause=Erasure.SUBJECT_REQUEST, reason="test"
    )
    erasure.erase(roles.system_actor(), plan, via="command")

    notice = orjson.loads(read_file(generate(notice_body(decision_id))))["data"]

    assert notice["reasons"]
    for r in notice["reasons"]:
        assert r["value"] == "erased"
        assert r["text"] == f"{r['factor']} (its value erased) — raised the risk of “bad”"
    client = api_client(compliance_officer)
    shown = client.get(f"/api/v1/decisions/{decision_id}").content
    listed = client.get("/api/v1/decisions", {"model": "credit", "limit": 500}).content
    page = browser(compliance_officer).get(f"/decisions/{decision_id}/").content
    for text in (shown, listed, page):
        at = text.find(b"not given")
        assert at < 0, text[max(0, at - 300) : at + 50]


def credit_schema_names() -> list[str]:
    return [f["name"] for f in credit_schema()["features"]]


def browser(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client
