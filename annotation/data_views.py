"""Researcher pages for data: snapshots, downloads, imports, corpora, API tokens.

Thin views: a form validates, the role is checked, one workflow function acts
(`queue_freeze`, `ready_export`, `queue_export`, `queue_upload`, `queue_corpus`,
`create_token`).
"""

from __future__ import annotations

from datetime import timedelta
from itertools import islice

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from annotation.corpora import queue_corpus
from annotation.curation import CORPUS_FILTERS
from annotation.export import (
    DOWNLOAD_TYPES,
    FILE_FORMATS,
    FORMATS,
    PROMPT_MODES,
    STYLES,
    download_suffix,
    fail_lost_exports,
    iter_rows,
    queue_export,
    ready_export,
)
from annotation.importing import FORMATS as IMPORT_FORMATS
from annotation.importing import fail_lost_imports, queue_upload
from annotation.membership import get_project_for
from annotation.models import (
    ApiToken,
    Corpus,
    ImportReport,
    Project,
    Snapshot,
    SnapshotComparison,
    SnapshotExport,
)
from annotation.snapshots import (
    DEDUP_RULES,
    MARGIN_RULES,
    PAIR_RULES,
    REWRITE_RULES,
    TIE_RULES,
    fail_lost_comparisons,
    fail_lost_freezes,
    queue_comparison,
    queue_freeze,
    ready_comparison,
)
from annotation.tokens import create_token, revoke_token
from config import scopes
from config.forms import act, outcome, refusal_text
from config.roles import ADMIN, ANNOTATOR, RESEARCHER, role_required

SAMPLE_ROWS = 10


def _choices(options: dict | tuple) -> list[tuple[str, str]]:
    if isinstance(options, dict):
        return [(k, f"{k}: {v}") for k, v in options.items()]
    return [(k, k) for k in options]


class SnapshotForm(forms.Form):
    name = forms.CharField(max_length=200)
    rounds = forms.CharField(
        required=False, max_length=1_000, help_text="Round numbers, comma-separated."
    )
    gold = forms.ChoiceField(choices=_choices(("include", "exclude", "only")))
    simulated = forms.ChoiceField(choices=_choices(("include", "exclude", "only")))
    flagged = forms.ChoiceField(choices=_choices(("include", "exclude")))
    skipped = forms.ChoiceField(choices=_choices(("include", "exclude")))
    votes = forms.ChoiceField(choices=_choices(("every", "consensus")))
    min_agreement = forms.FloatField(required=False, min_value=0, max_value=1)
    min_reliability = forms.FloatField(required=False, min_value=0, max_value=1)
    since = forms.DateField(required=False)
    until = forms.DateField(required=False)
    pair_rule = forms.ChoiceField(choices=_choices(PAIR_RULES))
    tie_rule = forms.ChoiceField(choices=_choices(TIE_RULES))
    dedup_rule = forms.ChoiceField(choices=_choices(DEDUP_RULES))
    margin_rule = forms.ChoiceField(choices=_choices(MARGIN_RULES))
    rewrite_rule = forms.ChoiceField(
        choices=_choices(REWRITE_RULES),
        help_text="; ".join(f"{k}: {v}" for k, v in REWRITE_RULES.items()),
    )

    def clean_rounds(self) -> list[int] | None:
        raw = self.cleaned_data["rounds"].strip()
        if not raw:
            return None
        parts = [part.strip() for part in raw.split(",") if part.strip()]
        if not all(part.isdecimal() for part in parts):
            raise forms.ValidationError(
                f"rounds must be numbers separated by commas, got {raw!r}"
            )
        return [int(part) for part in parts]

    def snapshot_filter(self) -> dict:
        data = self.cleaned_data
        keys = (
            "rounds",
            "gold",
            "simulated",
            "flagged",
            "skipped",
            "votes",
            "min_agreement",
            "min_reliability",
        )
        result = {k: data[k] for k in keys if data.get(k) not in (None, "")}
        for key in ("since", "until"):
            if data.get(key):
                result[key] = data[key].isoformat()
        return result


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL, gzip JSONL or Parquet.")
    format = forms.ChoiceField(
        choices=[("", "detect")] + _choices(IMPORT_FORMATS), required=False
    )
    skip_invalid = forms.BooleanField(required=False)


class CorpusForm(forms.Form):
    """Upload a corpus: its name, kind, file and the curation's thresholds."""

    name = forms.SlugField(
        max_length=100, help_text="Lowercase letters, digits, '-' and '_'; unique here."
    )
    kind = forms.ChoiceField(choices=Corpus.Kind.choices, initial=Corpus.Kind.TEXT)
    file = forms.FileField(
        help_text="Plain text (documents separated by blank lines), JSON, JSONL, CSV "
        "or Parquet, optionally gzip; records with text, or prompt and completion."
    )
    min_chars = forms.IntegerField(min_value=1, initial=CORPUS_FILTERS.min_chars)
    max_chars = forms.IntegerField(min_value=1, initial=CORPUS_FILTERS.max_chars)
    max_char_run = forms.IntegerField(min_value=2, initial=CORPUS_FILTERS.max_char_run)
    max_repeated_ngrams = forms.FloatField(
        min_value=0, max_value=1, initial=CORPUS_FILTERS.max_repeated_ngrams
    )
    min_letter_share = forms.FloatField(
        min_value=0, max_value=1, initial=CORPUS_FILTERS.min_letter_share
    )
    near_duplicate_jaccard = forms.FloatField(
        min_value=0.01, max_value=1, initial=CORPUS_FILTERS.near_duplicate_jaccard
    )
    drop_harmful = forms.BooleanField(required=False, initial=True)

    def filters(self) -> dict:
        """Return the thresholds chosen."""
        return {k: self.cleaned_data[k] for k in CORPUS_FILTERS.to_dict()}


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the token is for, e.g. 'laptop'."
    )
    scopes = forms.MultipleChoiceField(
        choices=[
            (scopes.READ, "read: list and get"),
            (scopes.ANNOTATE, "annotate: take tasks, rank, skip"),
            (scopes.DATA, "data: prompts, snapshots, downloads, imports"),
            (scopes.ADMIN, "admin: projects, training rounds, revoking tokens"),
        ],
        initial=[scopes.READ],
        widget=forms.CheckboxSelectMultiple,
        help_text="What it may do; your role still limits it.",
    )
    expires_in_days = forms.TypedChoiceField(
        label="Expires",
        choices=[("7", "in 7 days"), ("30", "in 30 days"), ("90", "in 90 days")]
        + [("365", "in a year"), ("", "never")],
        coerce=int,
        empty_value=None,
        initial="90",
        required=False,
    )


@role_required(RESEARCHER)
def snapshots(request: HttpRequest, name: str) -> HttpResponse:
    """List a project's snapshots and freeze a new one."""
    project = get_project_for(request.user, name)
    form = SnapshotForm(request.POST or None, initial={"name": ""})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        snapshot = act(
            form,
            queue_freeze,
            project,
            data["name"],
            user=request.user,
            filter=form.snapshot_filter(),
            pair_rule=data["pair_rule"],
            tie_rule=data["tie_rule"],
            dedup_rule=data["dedup_rule"],
            margin_rule=data["margin_rule"],
            rewrite_rule=data["rewrite_rule"],
        )
        if snapshot is not None:
            messages.success(request, queued_message(snapshot))
            return redirect("data:snapshot", snapshot_id=snapshot.pk)
    fail_lost_freezes()
    return render(
        request,
        "data/snapshots.html",
        {
            "project": project,
            "snapshots": Snapshot.any_state.filter(project=project).select_related(
                "created_by"
            ),
            "form": form,
        },
        status=400 if request.method == "POST" else 200,
    )


def queued_message(snapshot: Snapshot) -> str:
    """Say that a freeze was queued and where it is followed."""
    return (
        f"Queued the freeze of {snapshot.name}: the worker (manage.py db_worker) "
        "freezes it, and this page follows it."
    )


@role_required(RESEARCHER)
def snapshot(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    """Show a snapshot: its filter, rules, counts, agreement, lengths and sample rows.

    While the worker freezes it, the page shows its progress and polls itself with
    htmx; once done, the poll reloads the whole page. A freeze whose worker went
    silent is failed first (`fail_lost_freezes`).
    """
    fail_lost_freezes()
    snap = get_object_or_404(
        Snapshot.any_state.select_related("project", "created_by"),
        pk=snapshot_id,
        project__in=Project.objects.visible_to(request.user),
    )
    if request.htmx and snap.status == Snapshot.Status.DONE:
        return HttpResponseClientRefresh()
    if snap.status != Snapshot.Status.DONE:
        template = (
            "data/_snapshot_freeze.html"
            if request.htmx
            else "data/snapshot_freeze.html"
        )
        return render(request, template, {"snapshot": snap})
    sample = list(islice(iter_rows(snap, style="standard"), SAMPLE_ROWS))
    return render(
        request,
        "data/snapshot.html",
        {
            "snapshot": snap,
            "sample": sample,
            "formats": FORMATS,
            "styles": STYLES,
            "prompt_modes": PROMPT_MODES,
            "file_formats": FILE_FORMATS,
            "others": Snapshot.objects.filter(project=snap.project_id).exclude(
                pk=snap.pk
            ),
        },
    )


@role_required(RESEARCHER)
def snapshot_diff(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    """Compare a snapshot with the one `?against=` names: pairs added and removed.

    Snapshots over REQUEST_MAX_PAIRS pairs are compared by the worker: the page queues
    the comparison (again, if it failed) and shows a bar that polls with htmx; the poll
    reads the job without queuing it and reloads the page once it is done.
    """
    snap = get_object_or_404(
        Snapshot.objects.select_related("project"),
        pk=snapshot_id,
        project__in=Project.objects.visible_to(request.user),
    )
    others = Snapshot.objects.filter(project=snap.project_id).exclude(pk=snap.pk)
    against = request.GET.get("against", "")
    diff = job = None
    if against.isdigit():
        other = get_object_or_404(Snapshot, pk=int(against), project=snap.project_id)
        fail_lost_comparisons()
        diff = ready_comparison(snap, other)
        if request.htmx:  # the bar's poll
            if diff is not None:
                return HttpResponseClientRefresh()
            job = get_object_or_404(SnapshotComparison, a=snap, b=other)
            return render(
                request, "data/_comparison.html", {"snapshot": snap, "job": job}
            )
        if diff is None:
            job = queue_comparison(snap, other, user=request.user)
    return render(
        request,
        "data/snapshot_diff.html",
        {"snapshot": snap, "others": others, "diff": diff, "job": job},
    )


@role_required(RESEARCHER)
def download(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    """Send the snapshot's export in the format the query string asks for.

    An export not built yet of a snapshot over REQUEST_MAX_PAIRS pairs is queued
    for the worker, and the answer redirects to its page, which follows the build and
    then starts the download.
    """
    snap = get_object_or_404(
        Snapshot.objects.select_related("project"),
        pk=snapshot_id,
        project__in=Project.objects.visible_to(request.user),
    )
    options = {
        "fmt": request.GET.get("fmt", "trl"),
        "style": request.GET.get("style", "conversational"),
        "prompt": request.GET.get("prompt", "explicit"),
        "file_format": request.GET.get("file_format", "jsonl"),
    }
    fail_lost_exports()
    path, refused = outcome(ready_export, snap, **options)
    if refused:
        return HttpResponse(
            refusal_text(refused), status=400, content_type="text/plain"
        )
    if path is None:
        job = queue_export(snap, user=request.user, **options)
        return redirect("data:export", job.pk)
    name = (
        f"{snap.project.name}-{snap.name}-{options['fmt']}."
        f"{download_suffix(options['file_format'])}"
    ).replace("/", "_")
    return FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=name,
        content_type=DOWNLOAD_TYPES[options["file_format"]],
    )


@role_required(RESEARCHER)
def export(request: HttpRequest, export_id: int) -> HttpResponse:
    """Follow an export the worker builds: a live bar (htmx, every second); the poll
    that finds it done swaps in a link to the file, which stops the polling, and
    starts the download once; a failed build shows why and a link that queues it
    again."""
    fail_lost_exports()
    job = get_object_or_404(
        SnapshotExport.objects.select_related("snapshot__project", "created_by"),
        pk=export_id,
        snapshot__project__in=Project.objects.visible_to(request.user),
    )
    url = (
        reverse("data:download", args=[job.snapshot_id])
        + "?"
        + urlencode(job.options())
    )
    template = "data/_export.html" if request.htmx else "data/export.html"
    # Only the poll that sees the build finish starts the download, not a reload.
    start = bool(request.htmx) and job.status == SnapshotExport.Status.DONE
    return render(
        request, template, {"job": job, "download_url": url, "start_download": start}
    )


@role_required(RESEARCHER)
def imports(request: HttpRequest, name: str) -> HttpResponse:
    """Upload a preference file for the worker to import; list earlier imports.

    A valid upload is staged and queued, and the answer is 303 to its report page,
    which follows the import as the worker reads the file.
    """
    project = get_project_for(request.user, name)
    fail_lost_imports()
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        report = act(
            form,
            queue_upload,
            project,
            form.cleaned_data["file"],
            fmt=form.cleaned_data["format"] or None,
            skip_invalid=form.cleaned_data["skip_invalid"],
            user=request.user,
        )
        if report is not None:
            return redirect("data:import_report", report_id=report.pk)
    return render(
        request,
        "data/imports.html",
        {
            "project": project,
            "form": form,
            "reports": ImportReport.objects.filter(
                project=project, kind=ImportReport.Kind.PREFERENCES
            )[:20],
        },
        status=400 if form.is_bound else 200,
    )


@role_required(RESEARCHER)
def import_report(request: HttpRequest, report_id: int) -> HttpResponse:
    """Show an import: its progress while the worker reads the file (the page polls
    itself with htmx), then its report; an import whose worker went silent is
    failed first (`fail_lost_imports`)."""
    fail_lost_imports()
    report = get_object_or_404(
        ImportReport.objects.select_related("project"),
        pk=report_id,
        project__in=Project.objects.visible_to(request.user),
    )
    template = "data/_import_report.html" if request.htmx else "data/import_report.html"
    return render(request, template, {"project": report.project, "report": report})


@role_required(RESEARCHER)
def corpora(request: HttpRequest, name: str) -> HttpResponse:
    """Upload a corpus for the worker to curate; list the project's corpora and the
    uploads not yet done. A valid upload is staged and queued, and the answer is
    303 to its job page, which follows the curation and then links the corpus."""
    project = get_project_for(request.user, name)
    fail_lost_imports()
    form = CorpusForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        job = act(
            form,
            queue_corpus,
            project,
            form.cleaned_data["name"],
            form.cleaned_data["file"],
            kind=form.cleaned_data["kind"],
            filters=form.filters(),
            user=request.user,
        )
        if job is not None:
            return redirect("data:import_report", report_id=job.pk)
    uploads = project.imports.filter(kind=ImportReport.Kind.CORPUS).exclude(
        status=ImportReport.Status.DONE
    )
    return render(
        request,
        "data/corpora.html",
        {
            "project": project,
            "form": form,
            "corpora": project.corpora.all()[:100],
            "uploads": uploads[:20],
        },
        status=400 if form.is_bound else 200,
    )


@role_required(RESEARCHER)
def corpus(request: HttpRequest, name: str, corpus: str) -> HttpResponse:
    """Show a corpus: its hash, filters, and per reason the count and samples dropped."""
    project = get_project_for(request.user, name)
    found = get_object_or_404(Corpus, project=project, name=corpus)
    return render(request, "data/corpus.html", {"project": project, "corpus": found})


@role_required(ANNOTATOR, RESEARCHER, ADMIN)
def tokens(request: HttpRequest) -> HttpResponse:
    """List the user's API tokens; create one and show it once."""
    form = TokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        token, raw = create_token(
            request.user,
            form.cleaned_data["name"],
            form.cleaned_data["scopes"],
            None if days is None else timedelta(days=days),
        )
        created = {"token": token, "raw": raw}
        form = TokenForm()
    response = render(
        request,
        "data/tokens.html",
        {
            "form": form,
            "created": created,
            "tokens": ApiToken.objects.filter(user=request.user),
        },
    )
    # The raw token is on this page only: never cache it.
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of the user's tokens."""
    token = get_object_or_404(ApiToken, pk=token_id)
    revoke_token(token, request.user)
    messages.success(request, f"Revoked token {token.name} ({token.prefix}…).")
    return redirect("data:tokens")
