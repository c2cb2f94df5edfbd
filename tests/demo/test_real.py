"""`manage.py setup_real` refuses what it cannot set up, naming the fix (the real run is in
tests/training/test_real_model.py)."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.models import Project


def test_a_model_that_is_not_registered_is_refused_before_anything_is_created(db):
    with pytest.raises(CommandError, match="no policy named 'mine' is registered"):
        call_command("setup_real", "--model=mine", stdout=StringIO(), stderr=StringIO())
    assert not Project.objects.filter(name="real").exists()


@pytest.mark.parametrize("option", ["--prompts=0", "--publish=20000", "--held-out=-1"])
def test_sizes_out_of_bounds_are_refused(db, option):
    with pytest.raises(CommandError, match=r"must be between [01] and 10000"):
        call_command("setup_real", option, stdout=StringIO(), stderr=StringIO())
