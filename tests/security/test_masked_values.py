"""A masked value cannot be recovered or confirmed by a role that may not see it.

The findings: an auditor bisected an exact income with `feature.income__gte`
(24 requests), probed with `__regex` / `__startswith` / `__in` / `__isnull` when
`model=` was left out, found ('female', 44000) by hashing 88,001 candidates
against the shown content hash, and read other users' search values in the
audit log. Each channel is tried here the way the attacker did.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools

import orjson
import pytest

from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.decisions.verification import verify_chain
from auditapp.hashing import sha256_hex
from explain import batches
from tests.factories import DecisionPayloadFactory

# embedded: the search's SQL differs on SQLite (tests/conftest.py)
pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

SECRET = {"sex": "female", "income": 44000.0}
MASKED = ("income", "sex")


def sha256_canonical(document) -> str:
    """Independently of hashing.py: sorted keys, no spaces, as the README documents."""
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


@pytest.fixture
def target(model_version, ingest) -> Decision:
    """One applicant whose sex and income the auditor wants to learn, among others."""
    others = DecisionPayloadFactory.build_batch(5)
    item = DecisionPayloadFactory()
    item["inputs"].update(SECRET)
    results = ingest(item, *others)
    return Decision.objects.with_related().get(pk=results[0]["id"])


# --- search filters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "probe",
    [{"feature.income__gte": "40000"}, {"feature.income": "44000"}, {"feature.sex": "female"}],
)
def test_a_filter_on_a_masked_feature_is_refused_and_audited(api_client, auditor, target, probe):
    response = api_client(auditor).get("/api/v1/decisions", {"model": "credit", **probe})

    assert response.status_code == 403
    body = response.json()
    assert "results" not in body and "view_sensitive" in body["error"]["message"]
    denial = AuditEvent.objects.filter(action="access.denied", actor=auditor).get()
    assert denial.details["path"] == "/api/v1/decisions"


@pytest.mark.parametrize("model", [{"model": "credit"}, {}])
def test_searching_by_a_masked_features_rank_among_the_reasons_is_refused(
    api_client, auditor, compliance_officer, target, model
):
    params = {"top_reason": "income", **model}
    assert api_client(auditor).get("/api/v1/decisions", params).status_code == 403
    assert api_client(auditor).get("/api/v1/decisions", {"top_reason": "age"}).status_code == 200
    assert api_client(compliance_officer).get("/api/v1/decisions", params).status_code == 200


def test_the_search_page_refuses_it_too_and_offers_no_such_filter(client, auditor, target):
    client.force_login(auditor)

    refused = client.get("/decisions/", {"model": "credit", "feature.income__gte": "40000"})
    form = client.get("/decisions/", {"model": "credit"}).content.decode()

    assert refused.status_code == 403
    assert AuditEvent.objects.filter(action="access.denied", actor=auditor).exists()
    assert 'name="feature.age__gte"' in form
    assert "feature.income" not in form and "feature.sex" not in form


def test_bisection_answers_nothing_however_the_bound_is_set(api_client, auditor, target):
    client = api_client(auditor)
    answers = {
        client.get(
            "/api/v1/decisions", {"model": "credit", "feature.income__gte": str(bound)}
        ).status_code
        for bound in (0, 22000, 44000, 44001, 66000)
    }
    assert answers == {403}


def test_a_role_that_sees_the_values_may_filter_on_them(api_client, compliance_officer, target):
    """For an exact value (the blind index: encryption at rest); a range is refused, 400."""
    officer = api_client(compliance_officer)
    response = officer.get("/api/v1/decisions", {"model": "credit", "feature.income": "44000"})
    ranged = officer.get(
        "/api/v1/decisions",
        {"model": "credit", "feature.income__gte": "43999", "feature.income__lte": "44001"},
    )
    assert response.status_code == 200
    assert [d["id"] for d in response.json()["results"]] == [target.pk]
    assert ranged.status_code == 400
    assert ranged.json()["error"]["code"] == "invalid_parameters"
    assert "stored encrypted" in ranged.json()["error"]["details"]["feature.income__gte"][0]


@pytest.mark.parametrize("lookup", ["regex", "startswith", "in", "isnull", "contains", "gt"])
@pytest.mark.parametrize("with_model", [True, False])
def test_only_exact_gte_and_lte_exist_for_anyone(
    api_client, compliance_officer, auditor, target, lookup, with_model
):
    key = f"feature.income__{lookup}"
    params = {key: "4", **({"model": "credit"} if with_model else {})}
    for user in (compliance_officer, auditor):
        response = api_client(user).get("/api/v1/decisions", params)
        assert response.status_code == 400, (user, response.content)
        assert key in response.json()["error"]["details"]


def test_feature_filters_need_the_model_that_defines_them(api_client, compliance_officer, target):
    response = api_client(compliance_officer).get("/api/v1/decisions", {"feature.age__gte": "30"})

    assert response.status_code == 400
    assert "model=" in response.json()["error"]["details"]["feature.age__gte"][0]


# --- the content hash -------------------------------------------------------------------


def test_the_content_hash_is_no_dictionary_oracle(api_client, auditor, target):
    shown = api_client(auditor).get(f"/api/v1/decisions/{target.pk}").json()
    assert sorted(shown["masked_features"]) == sorted(MASKED)
    assert shown["salt"] is None
    assert all(shown["inputs"][name] == "[masked]" for name in MASKED)

    # The attack of the finding: every shown field, each candidate for the masked ones.
    base = {k: shown[k] for k in ("model", "version", "request_id", "subject_ref", "prediction")}
    base.update(
        artifact_sha256=target.model_version.artifact_sha256,
        score=shown["score"],
        source=shown["source"],
        metadata=shown["metadata"],
        predicted_at=target.predicted_at.isoformat(timespec="microseconds"),
        recorded_at=target.recorded_at.isoformat(timespec="microseconds"),
    )
    candidates = itertools.product(("female", "male"), [40000.0 + i for i in range(8001)])
    tried = 0
    for sex, income in candidates:
        inputs = {**shown["inputs"], "sex": sex, "income": income}
        tried += 1
        assert sha256_canonical({**base, "inputs": inputs}) != shown["content_hash"]
        # Nor can the commitment be tested without the salt.
        guess = {"salt": "", "values": {"income": income, "sex": sex}}
        assert sha256_canonical(guess) != shown["sensitive_inputs_commitment"]
    assert tried == 16002

    # Nor the commitment to the visible inputs, with the salt derived for them, to the
    # masked ones (document form 2: each has its own salt).
    for sex, income in itertools.product(("female", "male"), (44000.0, 44001.0)):
        guess = {"salt": shown["inputs_salt"], "values": {"income": income, "sex": sex}}
        assert sha256_canonical(guess) != shown["sensitive_inputs_commitment"]

    # What the auditor can do: open the visible inputs' commitment with their derived salt,
    # and check the hash with the commitments in place of the values.
    visible = {k: v for k, v in shown["inputs"].items() if k not in MASKED}
    opened = {"salt": shown["inputs_salt"], "values": visible}
    assert sha256_canonical(opened) == shown["inputs_commitment"]
    document = {
        **base,
        "inputs": shown["inputs_commitment"],
        "sensitive_inputs": shown["sensitive_inputs_commitment"],
        "document_form": 2,
    }
    assert sha256_canonical(document) == shown["content_hash"] == target.content_hash


def test_a_role_that_sees_the_values_can_open_the_commitment(
    api_client, compliance_officer, target
):
    shown = api_client(compliance_officer).get(f"/api/v1/decisions/{target.pk}").json()

    opened = {"salt": shown["salt"], "values": {n: shown["inputs"][n] for n in MASKED}}
    assert shown["inputs"]["income"] == 44000.0
    assert sha256_canonical(opened) == shown["sensitive_inputs_commitment"]


def test_each_decision_has_its_own_salt_and_the_chain_still_verifies(target):
    salts = list(Decision.objects.values_list("salt", flat=True))
    assert len({bytes(s) for s in salts}) == len(salts) == 6
    assert all(len(bytes(s)) == 16 for s in salts)
    assert verify_chain().ok


# --- explanations, pages, exports -------------------------------------------------------


@pytest.fixture
def explained(target, model_version) -> Decision:
    batches.run_batch(model_version.pk, "shap", [target.pk])
    batches.run_batch(model_version.pk, "lime", [target.pk])
    return target


def test_attributions_of_masked_features_are_withheld(api_client, auditor, explained):
    explanations = (
        api_client(auditor).get(f"/api/v1/decisions/{explained.pk}").json()["explanations"]
    )

    for method in ("shap", "lime"):
        shown = explanations[method]
        assert shown["status"] == "done"
        assert all(shown["attributions"][name] is None for name in MASKED)
        assert not set(MASKED) & set(shown["top_features"])
        assert shown["attributions"]["age"] is not None


def test_the_decision_page_shows_no_masked_value_weight_or_reason(client, auditor, explained):
    client.force_login(auditor)
    page = client.get(f"/decisions/{explained.pk}/").content.decode()

    assert "44000" not in page and "44,000" not in page and "female" not in page
    assert "Annual income" not in page.split("<h2>Inputs</h2>")[1].split("</table>")[1]
    assert "Masked features (2)" in page
    assert explained.content_hash in page


def test_the_csv_export_masks_the_values(client, auditor, target):
    client.force_login(auditor)
    response = client.get("/decisions/export.csv", {"model": "credit"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))

    mine = next(r for r in rows if r["id"] == str(target.pk))
    assert (mine["income"], mine["sex"]) == ("[masked]", "[masked]")
    assert all(r["income"] == "[masked]" for r in rows)


def test_notices_are_not_for_roles_that_may_not_see_the_inputs(api_client, auditor, explained):
    client = api_client(auditor)
    response = client.post(
        "/api/v1/reports",
        {"kind": "decision_notice", "decision_id": explained.pk, "format": "json"},
        format="json",
    )
    assert response.status_code == 403


# --- the audit log ----------------------------------------------------------------------


def test_the_audit_log_withholds_sensitive_search_values(
    api_client, client, compliance_officer, auditor, target
):
    officer = api_client(compliance_officer)
    search = officer.get(
        "/api/v1/decisions",
        {"model": "credit", "feature.income": "44000", "feature.age__gte": "21"},
    )
    assert search.status_code == 200
    event = AuditEvent.objects.filter(action="decisions.searched").latest("id")

    # The auditor, through the API, the page and the CSV.
    rows = api_client(auditor).get("/api/v1/audit/events", {"action": "decisions.searched"})
    (row,) = rows.json()["results"]
    assert row["details"]["params"]["feature.income"] == "[masked]"
    assert row["details"]["params"]["feature.age__gte"] == "21"
    assert set(row["sensitive_details"]) == {"commitment"}
    client.force_login(auditor)
    page = client.get("/audit/", {"action": "decisions.searched"}).content.decode()
    download = client.get("/audit/events.csv", {"action": "decisions.searched"})
    exported = b"".join(download.streaming_content).decode()
    for text in (page, exported, orjson.dumps(rows.json()).decode()):
        assert "44000" not in text

    # Nor does the event's hash confirm a guess: its document has only the commitment.
    guess = event.hashed_fields()
    guess.pop("sensitive_details")
    for candidate in ("44000", "[masked]"):
        params = {**event.details["params"], "feature.income": candidate}
        assert sha256_hex({**guess, "details": {**event.details, "params": params}}) != (
            event.content_hash
        )

    # The compliance officer (view_sensitive) sees the value and can open the commitment.
    seen = officer.get("/api/v1/audit/events", {"action": "decisions.searched"}).json()
    (opened,) = [r["sensitive_details"] for r in seen["results"] if r["id"] == event.pk]
    assert opened["values"] == {"params": {"feature.income": "44000"}}
    committed = {"salt": opened["salt"], "values": opened["values"]}
    assert sha256_canonical(committed) == opened["commitment"]
    assert verify_chain().ok
