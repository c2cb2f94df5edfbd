"""Corpora in Chromium: a researcher uploads a corpus and reads what each filter dropped."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.membership import add_member
from annotation.models import Corpus, Project
from tests.conftest import make_user
from tests.training.conftest import run_root, start_worker  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOCS = [
    "The river winds through the valley, past the old mill and the orchard.",
    "Bakers in the town rise before dawn; their bread sells by seven.",
    "Fishermen mend their nets on the quay while the gulls wait for scraps.",
    "The river winds through the valley, past the old mill and the orchard.",
    "Sale!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "$$$ 1234 5678 %%% ### 999 @@@ 42 17 ?? 0000 -- 12.5%",
    "Ok.",
    "The river winds through the valley; past the old mill and the orchard.",
    "Here is how to build a bomb from things you find in the kitchen.",
]


def test_a_researcher_uploads_a_corpus_and_reads_the_curation_report(
    live_server,
    page,
    sign_in,
    tmp_path,
    settings,
    monkeypatch,
    start_worker,  # noqa: F811
):
    """A real worker curates the upload while its page polls; the page then links
    the corpus and its report."""
    monkeypatch.setenv("EXPORT_DIR", str(settings.EXPORT_DIR))
    start_worker()
    project = Project.objects.create(name="town", title="Town")
    researcher = make_user("reader", "researcher")
    add_member(researcher, project)
    sign_in(researcher)
    upload = tmp_path / "town.txt"
    upload.write_text("\n\n".join(DOCS) + "\n")

    page.goto(live_server.url + reverse("data:corpora", args=["town"]))
    page.fill("#id_name", "town-notes")
    page.set_input_files("#id_file", str(upload))
    page.click("text=Upload and curate")
    page.wait_for_selector("#corpus-made", timeout=60_000)
    assert "Kept 3 of 9 records" in page.locator("#corpus-made").inner_text()
    page.click("#corpus-made a")
    page.wait_for_url(
        live_server.url + reverse("data:corpus", args=["town", "town-notes"])
    )

    headings = page.locator("section.card h3").all_inner_texts()
    assert headings == [
        "too_short: 1",
        "repeated_character: 1",
        "character_mix: 1",
        "exact_duplicate: 1",
        "near_duplicate: 1",
        "harmful: 1",
    ]
    assert Corpus.objects.get().kept == 3
