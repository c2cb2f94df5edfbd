"""Every command the README shows works as typed after the demo set-up, with no SECRET_KEY.

The commands are the lines of the README's ```sh, ```bash and ```console blocks (in a
console block, the lines after `$ `), run in README order, one bash per block (so a
block's variables, like `M=...`, carry to its later lines), from the repository root,
with the environment of a user's shell after `make run`: no SECRET_KEY, no DEBUG.

Three rules, each visible in the README itself:
- `make run` and `make test` are the set-up (the fixture does what `make run` does
  before it serves) and the suite itself, so they are not run again;
- a command whose comment says `skip-test: REASON` is skipped (a GPU, a file outside
  the repository); keep those few;
- `$TOKEN` is an API token the reader makes on /data/tokens/, and the `curl` lines talk
  to the served platform; the test makes a token, serves on a free port, and rewrites
  `127.0.0.1:8000` to that port.

The demo is set up on the micro models (`--preset micro`): the demo preset takes many
minutes of CPU to build, the micro one seconds, and every command runs the same code.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stack.conftest import ROOT, free_port, make_token, set_up_demo, stack_env
from tests.stack.test_make_run import start_make_run, wait_until_serving

pytestmark = pytest.mark.slow

BLOCK = re.compile(r"^```(sh|bash|console)[ \t]*\n(.*?)^```", re.M | re.S)
SET_UP = {"make run", "make test"}
SKIP_MARK = "skip-test:"


@dataclass
class Command:
    text: str  # as in the README, continuation lines joined
    skipped: str = ""  # why it is not run, if it is not


def _strip_comment(line: str) -> str:
    """Return the line without its trailing `# comment` (quotes respected)."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:
        return line.strip()
    return shlex.join(words) if words else ""


def _block_commands(language: str, body: str) -> list[Command]:
    lines = body.splitlines()
    if language == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    commands: list[Command] = []
    pending = ""
    for line in lines:
        pending = f"{pending}\n{line}" if pending else line
        if pending.rstrip().endswith("\\"):
            continue
        text, pending = pending.strip(), ""
        if not text or text.startswith("#"):
            continue
        bare = _strip_comment(text.replace("\\\n", " "))
        skipped = ""
        if bare in SET_UP:
            skipped = "set-up"
        elif SKIP_MARK in text:
            skipped = text.split(SKIP_MARK, 1)[1].strip().rstrip(")]")
        commands.append(Command(text=text, skipped=skipped))
    return commands


def readme_blocks(readme: str) -> list[list[Command]]:
    """Return the commands of each shell block of the README, in order."""
    return [_block_commands(lang, body) for lang, body in BLOCK.findall(readme)]


def test_parser_reads_blocks_continuations_console_prompts_and_skip_marks():
    readme = (
        "text\n```sh\nmake run    # set up\n    # more comment\nmake test\n```\n"
        '```bash\nM="echo a"\n$M b   # run\ncurl -d \'{"a": 1}\' \\\n    http://x\n'
        "gpu --go   # on a GPU host (skip-test: needs a GPU)\n```\n"
        "```console\n$ echo hi\nhi\n```\n```\nnot shell\n```\n"
    )
    blocks = readme_blocks(readme)
    assert [[c.skipped for c in b] for b in blocks] == [
        ["set-up", "set-up"],
        ["", "", "", "needs a GPU"],
        [""],
    ]
    assert blocks[1][2].text == "curl -d '{\"a\": 1}' \\\n    http://x"
    assert blocks[2][0].text == "echo hi"


def test_a_skipped_command_is_skipped_whole_continuation_lines_included():
    (block,) = readme_blocks(
        "```sh\nfalse \\\n    --more   # skip-test: not here\ntrue\n```\n"
    )
    assert block[0].skipped == "not here"
    script = _script(block, port=8000)
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, script + result.stderr


def _script(commands: list[Command], port: int) -> str:
    lines = [
        "set -eE -o pipefail",
        "trap 'echo \"README command failed (exit $?): $BASH_COMMAND\" >&2' ERR",
    ]
    for command in commands:
        if command.skipped:
            text = command.text.replace("\n", "\n# ")  # every line of it
            lines.append(f"# skipped ({command.skipped}): {text}")
            continue
        label = shlex.quote(command.text.splitlines()[0][:90])
        lines.append("__started=$SECONDS")
        lines.append(command.text.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
        lines.append(f'echo "[readme] $((SECONDS - __started)) s: "{label} >&2')
    return "\n".join(lines) + "\n"


def _serve(var_dir: Path, port: int, log) -> subprocess.Popen:
    """Serve as the reader does, with `make run` (its install step skipped)."""
    server = start_make_run(var_dir, port, log)
    wait_until_serving(port, server, timeout_s=180)
    return server


def _working_copy(folder: Path) -> Path:
    """Return `folder` holding a link to each top-level entry of the repository.

    The commands run there as from the repository root, and the files they write
    at the top (prefs.jsonl, r1.parquet, zoo.txt, ...) land in `folder`, never in
    the checkout: a commit made while this test runs can't pick them up.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for entry in ROOT.iterdir():
        (folder / entry.name).symlink_to(entry)
    return folder


def test_every_readme_command_exits_zero(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("stack-readme")
    set_up_demo(var_dir, "micro")
    blocks = [b for b in readme_blocks((ROOT / "README.md").read_text()) if b]
    skipped = [c for b in blocks for c in b if c.skipped and c.skipped != "set-up"]
    # A GPU worker, a file outside the repository, the chaos bench (restarts PostgreSQL)
    # and the real model's 3-seed loop (CPU-hours; run at micro size by
    # tests/training/test_real_model.py).
    assert len(skipped) <= 4, f"keep the skipped set tiny: {skipped}"
    env = stack_env(var_dir)
    env["TOKEN"] = make_token(env, scopes=("read", "data"))  # as the README asks
    port = free_port()
    before = set(ROOT.iterdir())
    cwd = _working_copy(var_dir / "repository")
    log = (var_dir / "make-run.log").open("w")
    server = _serve(var_dir, port, log)
    timings: list[str] = []
    try:
        for number, block in enumerate(blocks, 1):
            if all(c.skipped for c in block):
                continue
            started = time.monotonic()
            result = subprocess.run(
                ["bash", "-c", _script(block, port)],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            timings.append(f"block {number}: {time.monotonic() - started:.0f} s")
            timings += [
                ln for ln in result.stderr.splitlines() if ln.startswith("[readme]")
            ]
            assert result.returncode == 0, (
                f"README block {number} failed:\n{result.stderr[-4000:]}\n"
                f"{result.stdout[-2000:]}"
            )
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        server.wait(timeout=30)
        log.close()
        print("README command timings:", *timings, sep="\n  ")
    assert set(ROOT.iterdir()) == before, "a README command wrote into the checkout"
