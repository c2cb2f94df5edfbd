"""`make run`: migrate, set up the demo, then serve the web app and a worker until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from config import task_queue
from config.process_tree import become_subreaper, stop_tree
from demo.project import DEMO_USERS, setup_demo


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Migrate the database, build the demo models and project if absent, publish round 1, "
        "then run the web server and a task worker until interrupted."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("PORT", "8000"))
        )
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument(
            "--preset", default="demo", help="demo models size: demo or micro"
        )
        parser.add_argument(
            "--setup-only", action="store_true", help="set everything up, then exit"
        )
        parser.add_argument(
            "--real",
            action="store_true",
            help="also set up the real model (manage.py setup_real: SmolLM2, the "
            "project 'real', round 1)",
        )

    def handle(
        self,
        *args,
        host: str,
        port: int,
        web_workers: int,
        preset: str,
        setup_only: bool,
        real: bool = False,
        **options,
    ) -> None:
        started = time.monotonic()
        if why := task_queue.unreachable():
            raise CommandError(why)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        report = setup_demo(preset=preset)
        self._print_welcome(host, port, report.new_passwords, report.published_round)
        if real:
            call_command("setup_real", stdout=self.stdout, stderr=self.stderr)
        self.stdout.write(f"Ready in {time.monotonic() - started:.1f} s.")
        if setup_only:
            return
        self._serve(host, port, web_workers)

    def _print_welcome(
        self, host: str, port: int, passwords: dict[str, str], published: int | None
    ) -> None:
        url = f"http://{host}:{port}/"
        lines = ["", f"The platform is at {url}", ""]
        if published:
            lines.append(f"Published round {published} of project 'demo'.")
        if passwords:
            lines.append(
                "Demo users (passwords are shown only now; set DEMO_<USER>_PASSWORD to choose them):"
            )
            for username, password in passwords.items():
                lines.append(f"  {username:<12} {DEMO_USERS[username]:<11} {password}")
        else:
            lines.append(
                "Demo users: admin, researcher, annotator1-3 (passwords were printed on the first "
                "run; change one with: .venv/bin/python manage.py changepassword NAME)."
            )
        lines += [
            "Annotators: log in and press 'Start annotating'. Admins: 'Launch training round'.",
            "Press Ctrl-C to stop the web server, the worker and the inference process.",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def _serve(self, host: str, port: int, web_workers: int) -> None:
        # Ctrl-C (SIGINT) and a polite kill (SIGTERM) both stop the children cleanly,
        # even when the shell started us with SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        become_subreaper()
        children: list[subprocess.Popen] = []
        try:
            for command in self._commands(host, port, web_workers):
                children.append(subprocess.Popen(command, cwd=settings.BASE_DIR))
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            failed = [c for c in children if c.poll() is not None]
            self.stderr.write(
                f"a child process exited early (code {failed[0].returncode}); stopping"
            )
        except KeyboardInterrupt:
            self.stdout.write(
                "\nStopping the web server, the worker and the inference process ..."
            )
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cut the clean-up short
            # The whole tree goes (gunicorn's workers, training stages), within seconds.
            killed = stop_tree(children)
            if killed:
                self.stderr.write(f"killed {len(killed)} process(es) that did not stop")

    def _commands(self, host: str, port: int, web_workers: int) -> list[list[str]]:
        """Return the command lines of the web server, the task worker and the inference
        process (playground replies: the web tier relays them and never loads a model)."""
        python = sys.executable
        web = [
            os.path.join(os.path.dirname(python), "gunicorn"),
            "-c",
            os.path.join("platform", "gunicorn.conf.py"),  # the production settings
            "config.wsgi",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(web_workers),
            "--access-logfile",
            "-",
        ]
        worker = task_queue.worker_command(python, settings.TASK_QUEUES)
        inference = [python, "manage.py", "serve_inference"]
        return [web, worker, inference]
