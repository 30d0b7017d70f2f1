"""The planted-bug list follows the code: every snippet still occurs exactly once in its file.

``scripts/mutate.py`` refuses to start otherwise, but it runs by hand (20 minutes on two
cores); this check runs with the suite, so a change that moves a snippet updates its entry
in the same commit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _mutate_module():
    spec = importlib.util.spec_from_file_location("mutate", REPO / "scripts" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutate", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_planted_bug_still_has_its_place_in_the_code():
    mutate = _mutate_module()
    mutations = mutate.load_mutations(REPO / "tests" / "mutations.yaml")
    mutate.check_in_sync(mutations, REPO)  # raises ListError naming every stale entry
    assert len(mutations) >= 20 and {m.file.split("/")[0] for m in mutations} >= {"tracefield", "viewer"}
