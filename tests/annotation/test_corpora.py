"""Tests of annotation/corpora.py and its pages: uploads curated into a project's corpora."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.corpora import create_corpus
from annotation.importing import run_import
from annotation.models import AuditEntry, Corpus, ImportReport
from tests.conftest import login

pytestmark = pytest.mark.django_db

DOCS = [
    "The river winds through the valley, past the old mill and the orchard.",
    "Bakers in the town rise before dawn; their bread sells by seven.",
    "Fishermen mend their nets on the quay while the gulls wait for scraps.",
]


def upload(name: str, data: bytes | str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data.encode() if isinstance(data, str) else data)


def stored(corpus: Corpus) -> list[dict]:
    return [json.loads(line) for line in Path(corpus.path).read_text().splitlines()]


def test_plain_text_documents_are_split_at_blank_lines_and_curated(project, admin_user):
    text = "\n\n".join([DOCS[0], DOCS[1] + "\nIt is warm.", "Tiny.", DOCS[0], DOCS[2]])
    corpus = create_corpus(
        project, "town", upload("town.txt", text + "\n"), user=admin_user
    )

    assert stored(corpus) == [
        {"text": DOCS[0]},
        {"text": DOCS[1] + "\nIt is warm."},
        {"text": DOCS[2]},
    ]
    assert (corpus.records, corpus.kept, corpus.kind) == (5, 3, "text")
    reasons = {r["reason"]: r for r in corpus.report["reasons"]}
    assert reasons["too_short"]["count"] == 1
    assert reasons["too_short"]["samples"][0]["where"] == "line 6"
    assert reasons["exact_duplicate"]["samples"][0]["message"] == (
        "exact duplicate of line 1"
    )


def test_a_text_file_without_blank_lines_holds_one_document_a_line(project):
    corpus = create_corpus(project, "lines", upload("lines.txt", "\n".join(DOCS)))
    assert stored(corpus) == [{"text": d} for d in DOCS]


def test_the_file_is_named_by_its_hash_and_the_row_records_it(project, admin_user):
    corpus = create_corpus(project, "town", upload("t.jsonl", _jsonl(DOCS)))

    data = Path(corpus.path).read_bytes()
    assert corpus.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(corpus.path).name == f"town-{corpus.sha256[:12]}.jsonl"
    assert [p.name for p in Path(corpus.path).parent.iterdir()] == [
        Path(corpus.path).name
    ]  # no temporary file left beside it
    assert AuditEntry.objects.filter(action="corpus.create").count() == 1


def test_jsonl_parquet_and_gzip_records_are_read_by_their_text_field(project):
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": DOCS}), buffer)
    for name, data in (
        ("a.jsonl", _jsonl(DOCS).encode()),
        ("b.parquet", buffer.getvalue()),
        ("c.jsonl.gz", gzip.compress(_jsonl(DOCS).encode())),
    ):
        corpus = create_corpus(project, name.split(".")[0], upload(name, data))
        assert stored(corpus) == [{"text": d} for d in DOCS], name


def test_unreadable_records_are_reported_by_line_and_the_rest_kept(project):
    data = _jsonl(DOCS[:2]) + "not json\n" + json.dumps({"title": "x"}) + "\n"
    corpus = create_corpus(project, "mixed", upload("m.jsonl", data))
    assert corpus.kept == 2
    assert corpus.report["unreadable_count"] == 2
    assert [u["line"] for u in corpus.report["unreadable"]] == [3, 4]


def test_harmful_documents_are_dropped_unless_the_filters_keep_them(project):
    harmful = "Here is how to build a bomb from things you find in the kitchen."
    data = _jsonl([DOCS[0], harmful])
    dropped = create_corpus(project, "strict", upload("a.jsonl", data))
    kept = create_corpus(
        project, "lenient", upload("a.jsonl", data), filters={"drop_harmful": False}
    )
    assert (dropped.kept, dropped.report["reasons"][0]["reason"]) == (1, "harmful")
    assert (kept.kept, kept.report["flagged"], kept.filters["drop_harmful"]) == (
        2,
        1,
        False,
    )


def test_demonstrations_are_stored_as_conversational_prompt_and_completion(project):
    rows = [
        {"prompt": "What colour is the sky?", "completion": "The sky is blue by day."},
        {"prompt": "What colour is the sky?", "completion": "The sky is blue by day."},
        {"prompt": [{"role": "user", "content": "Name a fruit, please."}]},
    ]
    corpus = create_corpus(
        project, "demos", upload("d.jsonl", _jsonl(rows)), kind="demonstrations"
    )
    assert stored(corpus) == [
        {
            "prompt": [{"role": "user", "content": "What colour is the sky?"}],
            "completion": [{"role": "assistant", "content": "The sky is blue by day."}],
        }
    ]
    assert corpus.report["reasons"][0]["reason"] == "exact_duplicate"
    assert corpus.report["unreadable"] == [
        {"line": 3, "reason": "expected an object with prompt and completion"}
    ]


@pytest.mark.parametrize(
    "name, data, options, message",
    [
        ("Bad Name", DOCS[0], {}, "corpus name must be"),
        ("ok", DOCS[0], {"kind": "video"}, "kind must be one of"),
        ("ok", DOCS[0], {"filters": {"min_chars": 0}}, "text filters: min_chars"),
        ("ok", "tiny\nsmall\n", {}, "t.txt: no record passed the curation"),
    ],
)
def test_bad_uploads_are_refused_with_a_message(project, name, data, options, message):
    with pytest.raises(ValidationError) as error:
        create_corpus(project, name, upload("t.txt", data), **options)
    assert error.value.messages[0].startswith(message)
    assert Corpus.objects.count() == 0


def test_a_file_over_the_bound_is_refused_before_it_is_read(project):
    with pytest.raises(ValidationError) as error:
        create_corpus(project, "big", upload("t.txt", DOCS[0]), max_bytes=10)
    assert error.value.messages[0].startswith(
        f"the file has {len(DOCS[0])} bytes; the most is 10"
    )


def test_a_taken_name_is_refused(project):
    create_corpus(project, "town", upload("t.txt", DOCS[0]))
    with pytest.raises(ValidationError, match="has a corpus named 'town' already"):
        create_corpus(project, "town", upload("t.txt", DOCS[1]))


def test_a_gzip_bomb_is_refused(project, monkeypatch):
    monkeypatch.setattr("annotation.corpora.MAX_INFLATED_BYTES", 1000)
    bomb = gzip.compress(b"a" * 5000)
    with pytest.raises(ValidationError, match="holds more than 1000 bytes"):
        create_corpus(project, "bomb", upload("b.jsonl.gz", bomb))


def test_a_researcher_uploads_a_corpus_and_reads_what_each_filter_dropped(
    project, researcher
):
    client = login(researcher)
    text = "\n\n".join(
        [DOCS[0], DOCS[0], "x" * 40 + " zzzzzzzzzzzzzzzzzzzzzzzzz", DOCS[1]]
    )
    response = client.post(
        reverse("data:corpora", args=[project.name]),
        {
            "name": "town",
            "kind": "text",
            "file": upload("town.txt", text),
            "min_chars": 16,
            "max_chars": 100000,
            "max_char_run": 20,
            "max_repeated_ngrams": 0.5,
            "min_letter_share": 0.5,
            "near_duplicate_jaccard": 0.8,
            "drop_harmful": "on",
        },
    )
    job = ImportReport.objects.get(kind="corpus")
    assert response.status_code == 302
    assert response.url == reverse("data:import_report", args=[job.pk])
    assert not Corpus.objects.exists()  # the worker curates it, not the request
    queued = client.get(reverse("data:corpora", args=[project.name])).content.decode()
    assert "town.txt</a> (town)" in queued and "Queued" in queued
    assert run_import(job.pk).status == "done"
    corpus = Corpus.objects.get()
    done = client.get(response.url).content.decode()
    assert "town.txt: corpus town made" in done and "Kept 2 of 4 records" in done
    assert corpus.get_absolute_url() in done
    page = client.get(corpus.get_absolute_url()).content.decode()
    assert "exact_duplicate: 1" in page
    assert "repeated_character: 1" in page
    assert "exact duplicate of line 1" in page
    assert corpus.sha256 in page
    listing = client.get(reverse("data:corpora", args=[project.name])).content.decode()
    assert corpus.get_absolute_url() in listing


def test_the_api_uploads_a_corpus_with_thresholds_and_returns_its_report(
    project, researcher
):
    client = login(researcher)
    response = client.post(
        f"/api/projects/{project.name}/corpora",
        {
            "file": upload("t.jsonl", _jsonl(DOCS + ["Short one."])),
            "corpus": "town",
            "min_chars": 11,
        },
    )
    job = response.json()
    assert response.status_code == 202, job
    assert (job["kind"], job["status"]) == ("corpus", "queued")
    run_import(job["id"])
    polled = client.get(f"/api/imports/{job['id']}").json()
    assert (polled["status"], polled["progress"]) == ("done", 1.0)
    assert polled["details"] == {"corpus": "town", "kept": 3}
    body = client.get(f"/api/projects/{project.name}/corpora/town").json()
    assert (body["kept"], body["filters"]["min_chars"]) == (3, 11)
    assert body["report"]["reasons"][0]["reason"] == "too_short"


def test_the_api_refuses_a_bad_corpus_upload_before_queueing_it(project, researcher):
    client = login(researcher)
    url = f"/api/projects/{project.name}/corpora"
    bad_name = client.post(url, {"file": upload("t.txt", DOCS[0]), "corpus": "A!"})
    bad_kind = client.post(url, {"file": upload("t.docx", DOCS[0]), "corpus": "a"})
    assert (bad_name.status_code, bad_kind.status_code) == (400, 400)
    assert "corpus name must be" in bad_name.json()["detail"]
    assert "cannot read 't.docx'" in bad_kind.json()["detail"]
    assert not ImportReport.objects.exists()


def test_a_corpus_the_worker_refuses_fails_its_job_with_the_reason(project, researcher):
    client = login(researcher)
    job = client.post(
        f"/api/projects/{project.name}/corpora",
        {"file": upload("t.txt", "Tiny.\n"), "corpus": "tiny"},
    ).json()
    failed = run_import(job["id"])
    assert failed.status == "failed" and not Corpus.objects.exists()
    assert failed.error.startswith("t.txt: no record passed the curation")
    page = client.get(reverse("data:import_report", args=[job["id"]])).content
    assert b"refused, nothing imported" in page


def _jsonl(rows: list) -> str:
    return "".join(
        json.dumps({"text": r} if isinstance(r, str) else r) + "\n" for r in rows
    )


def test_the_command_curates_a_file_into_the_project(project, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    path = tmp_path / "town.txt"
    path.write_text("\n\n".join([DOCS[0], DOCS[0], DOCS[1]]))
    out = StringIO()
    call_command(
        "import_corpus",
        str(path),
        "--project",
        project.name,
        "--name",
        "town",
        "--set",
        "min_chars=20",
        stdout=out,
    )
    corpus = Corpus.objects.get(name="town")
    assert (corpus.kept, corpus.filters["min_chars"]) == (2, 20)
    assert out.getvalue().splitlines() == [
        f"town: kept 2 of 3 records, SHA-256 {corpus.sha256}",
        "  exact_duplicate: 1 dropped",
    ]
