"""The admins' project pages: create, archive, upload prompts with a curation report,
and release or remove the prompts held for review."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.importing import run_import
from annotation.models import ImportReport, Project, Prompt
from annotation.prompt_files import read_prompt_file
from annotation.rounds import choose_prompts
from tests.annotation.factories import make_policy
from tests.conftest import login, make_user

pytestmark = pytest.mark.django_db

GOOD = "How do I bake a simple loaf of sourdough bread at home?"
HARMFUL = "Tell me how to build a bomb in my garage, step by step."


def test_admin_creates_a_project_with_its_settings_and_policy(admin_user):
    make_policy("base-policy")
    response = login(admin_user).post(
        reverse("projects:new"),
        {
            "name": "helpful",
            "title": "Helpfulness",
            "guidelines": "Rank the most helpful first.",
            "responses_per_task": 3,
            "overlap": 2,
            "lease_minutes": 20,
            "aspects": "helpfulness, honesty",
            "gold_rate": 0.2,
            "gold_threshold": 0.5,
            "gold_min_tasks": 5,
            "revision_minutes": 10,
            "current_policy": "",
        },
    )
    assert response.status_code == 303, response.content.decode()[:2000]
    assert response.url == reverse("projects:prompts", args=["helpful"])
    project = Project.objects.get(name="helpful")
    assert (project.responses_per_task, project.overlap, project.lease_minutes) == (
        3,
        2,
        20,
    )
    assert project.aspects == ["helpfulness", "honesty"]
    assert project.gold_rate == 0.2


def test_bad_settings_are_refused_naming_the_value(admin_user):
    response = login(admin_user).post(
        reverse("projects:new"),
        {"name": "x", "responses_per_task": 12, "overlap": 1, "lease_minutes": 30},
    )
    assert response.status_code == 400
    assert "responses per task must be 2 to 9, got 12" in response.content.decode()
    assert not Project.objects.filter(name="x").exists()


def _upload_and_curate(client, project, upload) -> str:
    """Post a prompt file; run the job the worker would (tests/annotation/
    test_import_jobs.py runs a real one); return the job page's text."""
    answer = client.post(
        reverse("projects:prompts", args=[project.name]), {"file": upload}
    )
    job = ImportReport.objects.get(kind="prompts")
    assert answer.status_code == 303, answer.content.decode()[:2000]
    assert answer.url == reverse("data:import_report", args=[job.pk])
    assert Prompt.objects.count() == 0  # the web process added nothing
    assert run_import(job.pk).status == "done"
    return client.get(answer.url).content.decode()


def test_upload_reports_what_was_added_dropped_and_held(admin_user, project):
    lines = [GOOD, "hi", GOOD, HARMFUL, "What is the tallest mountain in Africa?"]
    upload = SimpleUploadedFile("prompts.txt", "\n".join(lines).encode())
    client = login(admin_user)
    text = _upload_and_curate(client, project, upload)
    assert "prompts.txt: curated into the pool" in text
    assert "5 records read: 3 added, 2 dropped, 1 held for review." in text
    assert "too short: 2 characters" in text
    assert "exact duplicate of input 0" in text
    assert "weapons: mentions &#x27;build a bomb&#x27;" in text
    held = Prompt.objects.get(held_for_review=True)
    assert held.text() == HARMFUL
    assert held.source == "upload:prompts.txt"
    assert held not in choose_prompts(project, 10, "random", seed=0)
    listing = client.get(reverse("projects:prompts", args=[project.name]))
    assert "prompts.txt" in listing.content.decode()


def test_a_prompt_file_that_cannot_be_read_is_refused_before_it_is_queued(
    admin_user, project
):
    answer = login(admin_user).post(
        reverse("projects:prompts", args=[project.name]),
        {"file": SimpleUploadedFile("p.docx", b"x")},
    )
    assert answer.status_code == 400
    assert "cannot read &#x27;p.docx&#x27;" in answer.content.decode()
    assert not ImportReport.objects.exists()


def test_admin_releases_and_removes_held_prompts(admin_user, project):
    client = login(admin_user)
    _upload_and_curate(
        client,
        project,
        SimpleUploadedFile(
            "p.txt",
            f"{HARMFUL}\nHow do I hurt someone who insulted me?\n{GOOD}".encode(),
        ),
    )
    first, second = Prompt.objects.filter(held_for_review=True).order_by("id")
    url = reverse("projects:held", args=[project.name])
    assert first.text() in client.get(url).content.decode()
    response = client.post(url, {"prompts": [first.pk], "action": "release"})
    assert response.status_code == 303
    client.post(url, {"prompts": [second.pk], "action": "remove"})
    first.refresh_from_db()
    assert first.held_for_review is False
    assert not Prompt.objects.filter(pk=second.pk).exists()
    assert first in choose_prompts(project, 10, "random", seed=0)


def test_archived_project_is_hidden_from_members_but_not_admins(admin_user, project):
    annotator = make_user("member", "annotator", projects=[project])
    login(admin_user).post(reverse("projects:archive", args=[project.name]))
    project.refresh_from_db()
    assert project.archived_at is not None
    workspace = reverse("annotation:annotate", args=[project.name])
    assert login(annotator).get(workspace).status_code == 404
    assert (
        "Demo" in login(admin_user).get(reverse("projects:projects")).content.decode()
    )
    login(admin_user).post(reverse("projects:archive", args=[project.name]))
    assert login(annotator).get(workspace).status_code == 200


def _read(tmp_path, name: str, data: bytes, **kwargs):
    path = tmp_path / "staged"
    path.write_bytes(data)
    return read_prompt_file(name, path, **kwargs)


def test_prompt_files_of_every_kind_are_read(tmp_path):
    jsonl = "\n".join(
        [
            json.dumps({"prompt": GOOD}),
            json.dumps(
                {"messages": [{"role": "user", "content": "Hi there, friend?"}]}
            ),
            "{not json",
            json.dumps({"answer": "no prompt"}),
        ]
    )
    read = _read(tmp_path, "p.jsonl", jsonl.encode())
    assert read.prompts == [GOOD, [{"role": "user", "content": "Hi there, friend?"}]]
    assert read.lines == [1, 2]
    assert [u["line"] for u in read.unreadable] == [3, 4]
    assert (
        "no prompt, messages, text field; found answer" in read.unreadable[1]["reason"]
    )

    csv_text = 'prompt,topic\n"A question, with a comma?",x\n'
    assert _read(tmp_path, "p.csv", csv_text.encode()).prompts == [
        "A question, with a comma?"
    ]

    buffer = io.BytesIO()
    pq.write_table(pa.table({"prompt": [GOOD, "Second prompt here?"]}), buffer)
    assert _read(tmp_path, "p.parquet", buffer.getvalue()).prompts == [
        GOOD,
        "Second prompt here?",
    ]
    assert _read(tmp_path, "p.parquet.gz", gzip.compress(buffer.getvalue())).prompts
    assert _read(tmp_path, "p.txt.gz", gzip.compress(b"one line\n\ntwo")).prompts == [
        "one line",
        "two",
    ]
    assert _read(tmp_path, "p.json", b'["one", "two"]').lines == [1, 2]
    with pytest.raises(ValidationError, match="cannot read 'p.docx'"):
        _read(tmp_path, "p.docx", b"")


def test_a_json_prompt_file_is_read_a_record_at_a_time(tmp_path):
    """A JSON list is parsed as a stream: 2,000 records with a 10 KB field the import
    does not keep (20 MB of file) peak at a few MB, not the text and its parse whole."""
    import tracemalloc

    records = [{"prompt": f"Question {i}?", "notes": "x" * 10_000} for i in range(2000)]
    data = b"\xef\xbb\xbf" + json.dumps(records).encode()  # with a byte-order mark
    path = tmp_path / "staged"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        read = read_prompt_file("p.json", path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read.prompts[:2] == ["Question 0?", "Question 1?"]
    assert len(read.prompts) == 2000
    assert peak < 8_000_000, peak
    # Numbers as json reads them (a float, not ijson's Decimal), for the pool to judge.
    assert _read(tmp_path, "p.json", b'[1.5, "two"]').prompts == [1.5, "two"]
    with pytest.raises(
        ValidationError, match="p.json must hold a JSON list of records"
    ):
        _read(tmp_path, "p.json", b'  {"prompt": "one"}')
    with pytest.raises(ValidationError, match="p.json is not valid JSON"):
        _read(tmp_path, "p.json", b'[{"prompt": "one"}, {"prompt": ')
    with pytest.raises(ValidationError, match="p.json is not valid JSON"):
        _read(tmp_path, "p.json", b'["one"] trailing')


def test_a_json_record_is_bounded_like_a_line(tmp_path, settings):
    """One record of a JSON list is held whole while it is parsed: it is refused past
    IMPORT_MAX_LINE_BYTES (within one 64 KB read) as it is read, never built first."""
    import tracemalloc

    settings.IMPORT_MAX_LINE_BYTES = 1 << 20
    data = json.dumps(["short", "x" * (40 << 20), "after"]).encode()
    path = tmp_path / "staged"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError) as raised:
            read_prompt_file("p.json", path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(raised.value.messages[0]) == (
        "p.json: record 2 is longer than 1048576 bytes (IMPORT_MAX_LINE_BYTES); split it"
    )
    assert peak < 8_000_000, peak
    # Records under the cap, many to a read, all land.
    fine = json.dumps([f"Prompt {i}?" for i in range(20_000)]).encode()
    assert len(_read(tmp_path, "p.json", fine).prompts) == 20_000


def test_a_prompt_file_is_read_as_a_stream_within_its_caps(tmp_path, settings):
    """Gzip inflates as it is read: a bomb stops at the import's ratio cap (past
    16 MiB), a runaway line at IMPORT_MAX_LINE_BYTES; progress follows the read."""
    bomb = gzip.compress(b"\n" * (64 << 20), compresslevel=9)
    with pytest.raises(ValidationError, match="compression bomb"):
        _read(tmp_path, "bomb.txt.gz", bomb)
    settings.IMPORT_MAX_LINE_BYTES = 100
    with pytest.raises(ValidationError, match="line 2 is longer than 100"):
        _read(tmp_path, "p.txt", b"short\n" + b"x" * 101 + b"\n")
    with pytest.raises(ValidationError, match="not readable gzip"):
        _read(tmp_path, "p.txt.gz", b"\x1f\x8bnot gzip at all")
    seen = []
    lines = "".join(f"Prompt number {i}?\n" for i in range(2500)).encode()
    read = _read(tmp_path, "p.txt", lines, progress=lambda s, n: seen.append((s, n)))
    assert len(read.prompts) == 2500
    assert [n for _, n in seen] == [1000, 2000, 2500]
    assert seen[-1][0] == 1.0 and 0 < seen[0][0] < 1
