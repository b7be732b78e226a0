"""URLs: pages, the REST API v1 (API.md), and the OpenAPI document."""

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from auditapp.accounts import api as accounts_api
from auditapp.approvals import api as approvals_api
from auditapp.decisions import api as decisions_api
from auditapp.decisions import privacy_api
from auditapp.dossier import api as dossier_api
from auditapp.registry import api as registry_api
from auditapp.reports import api as reports_api
from auditapp.reports import subjects_api
from auditapp.reviews import api as reviews_api
from auditapp.serving import api as serving_api
from explain import api as explain_api

api_v1 = [
    path("models", registry_api.ModelListView.as_view(), name="api-models"),
    path("models/<slug:name>", registry_api.ModelDetailView.as_view(), name="api-model"),
    path(
        "models/<slug:name>/versions/<str:version>",
        registry_api.ModelVersionView.as_view(),
        name="api-model-version",
    ),
    path(
        "models/<slug:name>/versions/<str:version>/stage",
        registry_api.ModelVersionStageView.as_view(),
        name="api-model-version-stage",
    ),
    path(
        "models/<slug:name>/four-eyes",
        registry_api.ModelFourEyesView.as_view(),
        name="api-model-four-eyes",
    ),
    path("approvals", approvals_api.ApprovalListView.as_view(), name="api-approvals"),
    path(
        "approvals/<int:approval_id>",
        approvals_api.ApprovalDetailView.as_view(),
        name="api-approval",
    ),
    path(
        "approvals/<int:approval_id>/approve",
        approvals_api.ApprovalApproveView.as_view(),
        name="api-approval-approve",
    ),
    path(
        "approvals/<int:approval_id>/reject",
        approvals_api.ApprovalRejectView.as_view(),
        name="api-approval-reject",
    ),
    path("models/<slug:name>/predict", serving_api.PredictView.as_view(), name="api-predict"),
    path("models/<slug:name>/traffic", serving_api.TrafficView.as_view(), name="api-traffic"),
    path("models/<slug:name>/rollback", serving_api.RollbackView.as_view(), name="api-rollback"),
    path(
        "models/<slug:name>/versions/<str:version>/labelled-data",
        reviews_api.LabelledDataView.as_view(),
        name="api-labelled-data",
    ),
    path("decisions", dossier_api.DecisionListView.as_view(), name="api-decisions"),
    path(
        "decisions/<int:decision_id>",
        dossier_api.DecisionDetailView.as_view(),
        name="api-decision",
    ),
    path(
        "decisions/<int:decision_id>/feedback",
        reviews_api.DecisionFeedbackView.as_view(),
        name="api-decision-feedback",
    ),
    path("outcomes", decisions_api.OutcomeListView.as_view(), name="api-outcomes"),
    path(
        "decisions/<int:decision_id>/explain",
        explain_api.DecisionExplainView.as_view(),
        name="api-decision-explain",
    ),
    path(
        "decisions/<int:decision_id>/what-if",
        explain_api.DecisionWhatIfView.as_view(),
        name="api-decision-what-if",
    ),
    path(
        "decisions/<int:decision_id>/counterfactuals",
        explain_api.DecisionCounterfactualsView.as_view(),
        name="api-decision-counterfactuals",
    ),
    path(
        "decisions/<int:decision_id>/proof",
        decisions_api.DecisionProofView.as_view(),
        name="api-decision-proof",
    ),
    path("audit/events", accounts_api.AuditEventListView.as_view(), name="api-audit-events"),
    path(
        "audit/events/<int:event_id>/proof",
        decisions_api.AuditEventProofView.as_view(),
        name="api-audit-event-proof",
    ),
    path("audit/verify", decisions_api.AuditVerifyView.as_view(), name="api-audit-verify"),
    path(
        "audit/verify/<int:job_id>",
        decisions_api.VerificationJobView.as_view(),
        name="api-audit-verify-job",
    ),
    path("audit/seals", decisions_api.SealListView.as_view(), name="api-seals"),
    path("audit/seals/latest", decisions_api.LatestSealView.as_view(), name="api-latest-seal"),
    path("audit/seals/<int:tree_size>", decisions_api.SealDetailView.as_view(), name="api-seal"),
    path("audit/public-key", decisions_api.PublicKeyView.as_view(), name="api-public-key"),
    path("audit/consistency", decisions_api.ConsistencyView.as_view(), name="api-consistency"),
    path("legal-holds", privacy_api.LegalHoldListView.as_view(), name="api-legal-holds"),
    path(
        "legal-holds/<int:hold_id>",
        privacy_api.LegalHoldDetailView.as_view(),
        name="api-legal-hold",
    ),
    path(
        "legal-holds/<int:hold_id>/release",
        privacy_api.LegalHoldReleaseView.as_view(),
        name="api-legal-hold-release",
    ),
    path(
        "models/<slug:name>/retention",
        privacy_api.ModelRetentionView.as_view(),
        name="api-model-retention",
    ),
    path("retention/run", privacy_api.RetentionRunView.as_view(), name="api-retention-run"),
    path(
        "subject-requests",
        subjects_api.SubjectRequestListView.as_view(),
        name="api-subject-requests",
    ),
    path(
        "subject-requests/<int:request_id>",
        subjects_api.SubjectRequestDetailView.as_view(),
        name="api-subject-request",
    ),
    path(
        "subject-requests/<int:request_id>/report.<str:fmt>",
        subjects_api.SubjectAccessReportView.as_view(),
        name="api-subject-access-report",
    ),
    path("reports", reports_api.ReportListView.as_view(), name="api-reports"),
    path("reports/<int:report_id>", reports_api.ReportDetailView.as_view(), name="api-report"),
    path(
        "reports/<int:report_id>/download",
        reports_api.ReportDownloadView.as_view(),
        name="api-report-download",
    ),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/v1/", include("auditapp.monitoring.api_urls")),
    # Signed-in users only (SERVE_PERMISSIONS): anonymous gets 401 for the schema and
    # the sign-in page for the docs. The split view serves Swagger UI's start-up code
    # as a script file (?script), as the Content-Security-Policy requires.
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/docs/",
        login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    path("admin/", admin.site.urls),
    path("", include("auditapp.web.urls")),
]

handler403 = "auditapp.web.views.forbidden"
handler404 = "auditapp.web.views.not_found"
