#!/usr/bin/env python
"""Django's command-line entry point for the platform."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # OpenMP threads that spin while waiting make tiny models 10-100x slower on a busy
    # machine; waiting passively costs nothing measurable when it is quiet. Set before
    # anything imports torch, and inherited by workers and training stages.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
