"""Tests for ssd_eval.engine.folder_lock: one holder at a time, released on exit, no file left in the folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssd_eval.engine.folder_lock import folder_lock
from ssd_eval.errors import UserError


def test_a_held_folder_is_refused_to_a_second_holder_until_released(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(UserError) as refused:
            with folder_lock(tmp_path):
                pass
    assert str(refused.value) == (f"{tmp_path}: another run is using this output directory; wait for it to finish "
                                  "or choose another --out")
    with folder_lock(tmp_path):  # free again
        pass
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


def test_another_process_is_refused_while_the_folder_is_held(tmp_path):
    code = ("import sys\nfrom ssd_eval.errors import UserError\nfrom ssd_eval.engine.folder_lock import folder_lock\n"
            "try:\n    with folder_lock(sys.argv[1]):\n        print('got it')\n"
            "except UserError as exc:\n    print(exc)\n")
    with folder_lock(tmp_path):
        held = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert held.stdout.strip().endswith("another run is using this output directory; wait for it to finish or "
                                        "choose another --out")
    assert free.stdout.strip() == "got it"


def test_a_missing_folder_is_one_line_naming_it(tmp_path):
    with pytest.raises(UserError, match=rf"^{tmp_path / 'absent'}: cannot open the output directory: "):
        with folder_lock(tmp_path / "absent"):
            pass
