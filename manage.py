#!/usr/bin/env python
"""Django's command-line entry point for the platform."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # OpenMP threads that spin long while waiting make tiny models many times slower
    # on a busy machine (reward model, 2 cores, 2 CPU hogs: 16.4 s with the default
    # spin, 2.4 s passive), but waiting passively halves their speed when it is quiet
    # (2.3 s against 1.0 s). A short spin gets both: 2.7 s busy, 1.0 s quiet
    # (bench/train_overhead.py's model). Set before anything imports torch, and
    # inherited by workers and training stages; a user's own setting wins.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
