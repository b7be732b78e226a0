"""The sealed log's pages: verifying it, a verification's progress, the latest seal, a proof."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions import jobs, proofs, sealing
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.decisions.verification import read_exported_seal
from auditapp.errors import NotFound
from auditapp.pages import is_htmx, page


@login_required
@require_POST
@page
def verify_chain(request):
    """Verify the whole log as a job, optionally against an uploaded kept seal; poll its panel."""
    actor = roles.actor_for(request)
    against = None
    if upload := request.FILES.get("seal"):
        against = read_exported_seal(upload.read())
    job = jobs.request_verification(actor, against, ip=client_ip(request), via="page")
    if is_htmx(request):
        return render(request, "decisions/_verification.html", {"job": job})
    return redirect(f"/audit/?verification={job.pk}#chain")


@login_required
@page
def verification(request, job_id: int):
    """The verification panel alone, polled by htmx until the job is finished."""
    job = jobs.get_job_for_actor(roles.actor_for(request), job_id)
    return render(request, "decisions/_verification.html", {"job": job})


@login_required
@page
def latest_seal_download(request):
    """The latest seal as a JSON file for the auditor to keep; audited."""
    document = sealing.export_seal(roles.actor_for(request), ip=client_ip(request), via="page")
    response = JsonResponse(document, json_dumps_params={"indent": 2})
    filename = f"attest-seal-{document['tree_size']}.json"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@page
def proof(request, decision_id: int):
    """The decision's inclusion proof in the latest seal's tree, loaded on request."""
    decision = get_decision_for_actor(roles.actor_for(request), decision_id)
    try:
        proof = proofs.inclusion_proof(decision)
    except NotFound as missing:
        return render(request, "decisions/_proof.html", {"note": missing.message})
    context = {"proof": proof, "verified": proofs.inclusion_holds(proof)}
    return render(request, "decisions/_proof.html", context)
