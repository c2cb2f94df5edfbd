"""Take the README's screenshots from a real `make run` demo (docs/img/*.png).

    .venv/bin/python docs/screenshots.py

Sets the demo up in a temporary VAR_DIR (SQLite, the demo models as `make run`
builds them), has simulated annotators rank round 1, freezes two snapshots, an
annotator ranks three tasks by keys in the browser, then serves the platform as
`make run` does and photographs the pages in Chromium (Playwright,
/usr/bin/chromium). Nothing outside the temporary folder, var/screenshots/models
(the demo models, kept for the next run) and docs/img/ is touched; the server is
stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
OUT = ROOT / "docs" / "img"
PASSWORD = "screenshots-demo-9f3k"
USERS = ("admin", "researcher", "annotator1", "annotator2", "annotator3")
# A corpus with one record for each thing the curation drops (the corpus page).
CORPUS = [
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


# A pairwise project beside the demo: its first five tasks, two responses each, so the
# A/B workspace has real demo text to show.
PAIRWISE_SETUP = """
from django.contrib.auth.models import User
from annotation.models import Membership, Project, Prompt, RankingTask, Response
demo = Project.objects.get(name="demo")
ab, _ = Project.objects.get_or_create(name="demo-ab", defaults={
    "title": "Demo A/B", "mode": "pairwise", "responses_per_task": 2,
    "gold_rate": 0, "guidelines": demo.guidelines})
for task in demo.tasks.filter(is_gold=False).order_by("id")[:5]:
    prompt, _ = Prompt.objects.get_or_create(project=ab, content_hash=task.prompt.content_hash,
        defaults={"messages": task.prompt.messages})
    new = RankingTask.objects.create(project=ab, prompt=prompt, overlap=3)
    for position, response in enumerate(task.responses.order_by("position")[:2]):
        Response.objects.create(task=new, policy=response.policy, text=response.text,
            sampling=response.sampling, position=position)
for user in User.objects.filter(username__in=["annotator1", "researcher"]):
    Membership.objects.get_or_create(project=ab, user=user)
"""


def manage(env: dict, *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise SystemExit(f"the server did not listen on {port} within {seconds:.0f} s")


def prepare(env: dict) -> None:
    manage(env, "run_demo", "--setup-only")
    manage(
        env,
        "simulate_annotators",
        "--project",
        "demo",
        "--count",
        "2",
        "--noise",
        "0.1,0.05,0.02",
        "--max-tasks",
        "20",
    )
    manage(env, "freeze_snapshot", "first-20", "--project", "demo")
    manage(
        env,
        "simulate_annotators",
        "--project",
        "demo",
        "--count",
        "3",
        "--noise",
        "0.1,0.05,0.02",
        "--max-tasks",
        "30",
    )
    manage(env, "freeze_snapshot", "first-50", "--project", "demo")
    notes = Path(env["VAR_DIR"]) / "town-notes.txt"
    notes.write_text("\n\n".join(CORPUS) + "\n")
    manage(
        env, "import_corpus", str(notes), "--project", "demo", "--name", "town-notes"
    )
    manage(env, "shell", "-c", PAIRWISE_SETUP)


def shoot(base: str, only: set[str]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")

        def page_as(user: str):
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{base}/login/")
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_load_state("networkidle")
            return page

        def snap(page, name: str, path: str, full: bool = False) -> None:
            if only and name not in only:
                return
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            target = OUT / f"{name}.png"
            page.screenshot(path=str(target), full_page=full)
            taken.append(target)

        annotator = page_as("annotator1")
        annotator.goto(f"{base}/projects/demo/annotate/")
        annotator.wait_for_load_state("networkidle")
        for task in range(3):  # rank three tasks by keys: the history has rows
            for key in ("2", "1", "4", "3"):
                annotator.keyboard.press(key)
            if task == 0 and (not only or "workspace" in only):
                annotator.screenshot(path=str(OUT / "workspace.png"))
                taken.append(OUT / "workspace.png")
            annotator.keyboard.press("Enter")
            annotator.wait_for_timeout(1500)
        snap(annotator, "history", "/projects/demo/history/")
        if not only or "pairwise" in only:  # A better, chosen by its key
            annotator.goto(f"{base}/projects/demo-ab/annotate/")
            annotator.wait_for_selector("#workspace[data-ready]")
            annotator.keyboard.press("2")
            annotator.screenshot(path=str(OUT / "pairwise.png"))
            taken.append(OUT / "pairwise.png")

        researcher = page_as("researcher")
        snap(researcher, "data-manager", "/data/projects/demo/tasks/", full=True)
        snapshots = researcher.goto(f"{base}/data/projects/demo/snapshots/")
        del snapshots
        links = researcher.locator("a[href*='/data/snapshots/']").all()
        ids = sorted(
            {
                int(href.rstrip("/").split("/")[-1])
                for link in links
                if (href := link.get_attribute("href") or "")
                .rstrip("/")
                .split("/")[-1]
                .isdigit()
            }
        )
        if len(ids) >= 2:
            snap(
                researcher,
                "snapshot-diff",
                f"/data/snapshots/{ids[-1]}/diff/?against={ids[0]}",
                full=True,
            )
        snap(researcher, "audit", "/audit/")
        snap(researcher, "corpus", "/data/projects/demo/corpora/town-notes/", full=True)

        admin = page_as("admin")
        snap(admin, "people", "/people/")
        snap(admin, "launch", "/training/launch/", full=True)
        browser.close()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated screenshot names")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="screenshots-") as var:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
        env.update(
            {"VAR_DIR": var, "INSECURE_HTTP": "1", "SECRET_KEY": os.urandom(32).hex()}
        )
        # The demo models persist between runs (they take minutes to build).
        env["MODEL_DIR"] = str(ROOT / "var" / "screenshots" / "models")
        env.update({f"DEMO_{u.upper()}_PASSWORD": PASSWORD for u in USERS})
        prepare(env)
        port = free_port()
        server = subprocess.Popen(
            [PYTHON, "manage.py", "run_demo", "--port", str(port)],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(port)
            only = {name for name in args.only.split(",") if name}
            for path in shoot(f"http://127.0.0.1:{port}", only):
                print(path.relative_to(ROOT))
        finally:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    sys.exit(0)


if __name__ == "__main__":
    main()
