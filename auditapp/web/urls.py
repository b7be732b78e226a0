from django.urls import include, path

from auditapp.accounts import sso
from auditapp.accounts import views as account_views
from auditapp.approvals import views as approval_views
from auditapp.decisions import audit_pages
from auditapp.decisions import views as decision_views
from auditapp.dossier import views as dossier_views
from auditapp.registry import views as registry_views
from auditapp.reports import privacy_views, version_page
from auditapp.reports import views as report_views
from auditapp.reviews import views as review_views
from auditapp.serving import compare_page
from auditapp.serving import views as serving_views
from auditapp.web import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("", include("auditapp.monitoring.urls")),
    path("accounts/login/", account_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", account_views.LogoutView.as_view(), name="logout"),
    # Single sign-on (404 unless ATTEST_OIDC_ISSUER and the client are set).
    path("accounts/sso/start/", sso.SSOStartView.as_view(), name="sso-start"),
    path("accounts/sso/callback/", sso.SSOCallbackView.as_view(), name="sso-callback"),
    path("accounts/two-factor/", account_views.two_factor_enroll, name="two-factor-enroll"),
    path("accounts/two-factor/verify", account_views.two_factor_verify, name="two-factor-verify"),
    path("decisions/", dossier_views.search, name="decision-search"),
    path("decisions/export.csv", dossier_views.export_csv, name="decision-export"),
    path("decisions/filters", dossier_views.search_filters, name="decision-search-filters"),
    path("decisions/<int:decision_id>/", dossier_views.detail, name="decision-detail"),
    path(
        "decisions/<int:decision_id>/explanations",
        dossier_views.explanations,
        name="decision-explanations",
    ),
    path("decisions/<int:decision_id>/explain", dossier_views.explain, name="decision-explain"),
    path(
        "decisions/<int:decision_id>/counterfactuals",
        dossier_views.counterfactuals,
        name="decision-counterfactuals",
    ),
    path(
        "decisions/<int:decision_id>/counterfactuals/recompute",
        dossier_views.recompute_counterfactuals,
        name="decision-counterfactuals-recompute",
    ),
    path("decisions/<int:decision_id>/feedback", dossier_views.feedback, name="decision-feedback"),
    path("decisions/<int:decision_id>/what-if", dossier_views.what_if, name="decision-what-if"),
    path("decisions/<int:decision_id>/proof", decision_views.proof, name="decision-proof"),
    path("decisions/<int:decision_id>/flag", review_views.flag, name="decision-flag"),
    path("review/", review_views.queue, name="review-queue"),
    path("review/take", review_views.take_selected, name="review-take-selected"),
    path("review/<int:case_id>/take", review_views.take, name="review-take"),
    path("review/<int:case_id>/resolve", review_views.resolve, name="review-resolve"),
    path(
        "models/<slug:name>/versions/<str:version>/labelled.<str:fmt>",
        review_views.labelled_data,
        name="labelled-data",
    ),
    path("privacy/", privacy_views.privacy, name="privacy"),
    path(
        "privacy/holds/<int:hold_id>/release",
        privacy_views.release_hold,
        name="privacy-hold-release",
    ),
    path(
        "privacy/requests/<int:request_id>/report.<str:fmt>",
        privacy_views.access_report,
        name="privacy-access-report",
    ),
    path("audit/", audit_pages.audit_log, name="audit-log"),
    path("audit/events.csv", audit_pages.audit_log_csv, name="audit-log-export"),
    path("audit/verify", decision_views.verify_chain, name="audit-verify"),
    path("audit/verify/<int:job_id>", decision_views.verification, name="audit-verification"),
    path("audit/seal.json", decision_views.latest_seal_download, name="audit-latest-seal"),
    path("reports/", report_views.report_list, name="report-list"),
    path("reports/<int:report_id>/row", report_views.report_row, name="report-row"),
    path("reports/<int:report_id>/download", report_views.report_download, name="report-download"),
    path(
        "decisions/<int:decision_id>/notice", report_views.decision_notice, name="decision-notice"
    ),
    path("approvals/", approval_views.approval_list, name="approval-list"),
    path(
        "approvals/<int:approval_id>/<str:action>",
        approval_views.decide,
        name="approval-decide",
    ),  # action: approve or reject (anything else: 404)
    path("models/", registry_views.model_list, name="model-list"),
    path("models/<slug:name>/", registry_views.model_home, name="model-home"),
    path("models/<slug:name>/four-eyes", registry_views.four_eyes, name="model-four-eyes"),
    path("models/<slug:name>/traffic/", serving_views.traffic, name="model-traffic"),
    path("models/<slug:name>/compare/", compare_page.compare_versions, name="model-compare"),
    path("models/<slug:name>/compare/promote", compare_page.promote, name="model-promote"),
    path(
        "models/<slug:name>/versions/<str:version>/",
        version_page.version_detail,
        name="model-version",
    ),
]
