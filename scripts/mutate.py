#!/usr/bin/env python3
"""Mutation testing: plant each bug of a list, alone, in a copy of the tree and run the tests meant to catch it.

    python scripts/mutate.py                      # every entry of tests/mutations.yaml
    python scripts/mutate.py --only infer-input-range viewer-background-first-control-point
    python scripts/mutate.py --check              # only check that every snippet still occurs once

An entry names a file, an exact ``original`` snippet that must occur exactly once in it, the
``replacement`` (the planted bug) and the ``tests`` to run (pytest paths or node ids). The
runner refuses to start when a snippet is missing or ambiguous, so the list has to follow
the code. The working tree (tracked and untracked, not ignored files) is copied once into a
temporary folder beside a link to ../shared; each bug is written into that copy, its tests
run with ``pytest -x -q`` under a timeout, and the file is restored. A bug is *caught* when
its tests fail (or time out); *missed* when they pass. The tests first run once on the
unchanged copy: a failure there would make every bug look caught, so the run stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LIST = REPO / "tests" / "mutations.yaml"
FIELDS = {"id", "file", "original", "replacement", "tests", "bug"}
REQUIRED = FIELDS - {"bug"}
# pytest exit codes: 0 all passed, 1 some failed, 2 interrupted (e.g. a collection error),
# 4 usage error (e.g. a test id that does not exist), 5 no tests collected.
PASSED, FAILED, INTERRUPTED, USAGE_ERROR, NO_TESTS = 0, 1, 2, 4, 5


class ListError(Exception):
    """The mutation list is malformed or out of step with the code."""


@dataclass
class Mutation:
    id: str
    file: str
    original: str
    replacement: str
    tests: list[str]
    bug: str = ""


@dataclass
class Outcome:
    mutation: Mutation
    caught: bool
    detail: str
    seconds: float


def load_mutations(path: Path) -> list[Mutation]:
    """Read and validate the list: required fields, unique ids, existing files and tests, changed snippets."""
    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ListError(f"{path}: cannot read the list ({exc})") from exc
    if not isinstance(entries, list) or not entries:
        raise ListError(f"{path}: expected a YAML list of mutations")
    mutations, seen = [], set()
    for number, entry in enumerate(entries, 1):
        where = f"{path}: entry {number}" + (f" ({entry.get('id')})" if isinstance(entry, dict) and entry.get("id") else "")
        if not isinstance(entry, dict):
            raise ListError(f"{where}: not a mapping")
        missing, unknown = REQUIRED - set(entry), set(entry) - FIELDS
        if missing or unknown:
            raise ListError(f"{where}: " + "; ".join(filter(None, [missing and f"missing {sorted(missing)}", unknown and f"unknown {sorted(unknown)}"])))
        tests = entry["tests"] if isinstance(entry["tests"], list) else [entry["tests"]]
        mutation = Mutation(id=str(entry["id"]), file=str(entry["file"]), original=str(entry["original"]),
                            replacement=str(entry["replacement"]), tests=[str(t) for t in tests], bug=str(entry.get("bug", "")))
        if mutation.id in seen:
            raise ListError(f"{where}: duplicate id")
        seen.add(mutation.id)
        if mutation.original == mutation.replacement:
            raise ListError(f"{where}: the replacement equals the original")
        if not mutation.tests:
            raise ListError(f"{where}: names no tests")
        mutations.append(mutation)
    return mutations


def check_in_sync(mutations: list[Mutation], root: Path) -> None:
    """Every original snippet occurs exactly once in its file, and every test file exists; all problems at once."""
    problems = []
    for m in mutations:
        source = root / m.file
        if not source.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        count = source.read_text().count(m.original)
        if count != 1:
            what = "is not found" if count == 0 else f"occurs {count} times (add context to make it unique)"
            problems.append(f"{m.id}: the original snippet {what} in {m.file}:\n    {m.original!r}")
        for test in m.tests:
            if not (root / test.split("::")[0]).is_file():
                problems.append(f"{m.id}: test file {test.split('::')[0]} does not exist")
    if problems:
        raise ListError("the mutation list is out of step with the code; update these entries:\n  " + "\n  ".join(problems))


def copy_tree(root: Path, destination: Path) -> Path:
    """The working tree's files (tracked and untracked, not ignored) under ``destination/<name>``, ../shared linked beside it."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    copy = destination / root.name
    for name in filter(None, listed):
        source = root / name
        if source.is_file():  # deleted but still listed files are skipped
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shared = (root.parent / "shared").resolve()
    if shared.exists():
        (destination / "shared").symlink_to(shared)
    return copy


def run_tests(copy: Path, tests: list[str], timeout: float, report: Path) -> tuple[int | None, str]:
    """``pytest -x -q`` on ``tests`` in the copy (its packages first on the path); exit code (None: timed out) and output."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")  # no stale bytecode between mutations
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, output
    return done.returncode, done.stdout + done.stderr


def junit_summary(report: Path) -> tuple[list[str], int, int]:
    """Failed or errored test ids, and the counts of tests run and skipped."""
    if not report.is_file():
        return [], 0, 0
    failed, total, skipped = [], 0, 0
    for case in ET.parse(report).getroot().iter("testcase"):
        total += 1
        if case.find("skipped") is not None:
            skipped += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}")
    return failed, total, skipped


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def baseline(copy: Path, mutations: list[Mutation], timeout: float, work: Path) -> None:
    """The named tests must pass on the unchanged copy; otherwise every mutation would look caught."""
    tests = list(dict.fromkeys(t for m in mutations for t in m.tests))
    print(f"baseline: {len(tests)} test selections on the unchanged tree ...", flush=True)
    started = time.perf_counter()
    code, output = run_tests(copy, tests, timeout * 4, work / "baseline.xml")
    if code != PASSED:
        raise ListError(f"the tests fail (or time out) without any mutation; fix them first:\n{tail(output)}")
    _, total, skipped = junit_summary(work / "baseline.xml")
    print(f"baseline: {total} tests passed ({skipped} skipped) in {time.perf_counter() - started:.0f} s", flush=True)


def apply_and_run(copy: Path, mutation: Mutation, timeout: float, work: Path) -> Outcome:
    source = copy / mutation.file
    original = source.read_text()
    source.write_text(original.replace(mutation.original, mutation.replacement, 1))
    report = work / f"{mutation.id}.xml"
    started = time.perf_counter()
    try:
        code, output = run_tests(copy, mutation.tests, timeout, report)
    finally:
        source.write_text(original)
    seconds = time.perf_counter() - started
    failed, total, skipped = junit_summary(report)
    if code is None:
        return Outcome(mutation, True, f"timed out after {timeout:.0f} s", seconds)
    if code in (USAGE_ERROR, NO_TESTS):
        raise ListError(f"{mutation.id}: pytest could not run {mutation.tests} (exit {code}); fix the test ids:\n{tail(output)}")
    if code == PASSED:
        detail = f"{total} passed" if skipped < total else f"all {total} tests SKIPPED: nothing ran"
        return Outcome(mutation, False, detail, seconds)
    if failed:
        return Outcome(mutation, True, f"failed {failed[0]}", seconds)
    return Outcome(mutation, True, f"pytest exit {code}: {tail(output, 1)}", seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST, help=f"mutation list (default: {DEFAULT_LIST.relative_to(REPO)})")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these entries alone")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutation before it counts as caught (default: 300)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on the unchanged tree")
    parser.add_argument("--check", action="store_true", help="only check that the list is in step with the code")
    parser.add_argument("--fail-under", type=float, default=0.0, metavar="PERCENT", help="exit 1 when fewer are caught (default: 0)")
    parser.add_argument("--keep", action="store_true", help="keep the copy of the tree (its path is printed)")
    args = parser.parse_args(argv)
    try:
        mutations = load_mutations(args.list)
        check_in_sync(mutations, REPO)
        if args.only:
            unknown = sorted(set(args.only) - {m.id for m in mutations})
            if unknown:
                raise ListError(f"--only: no entries {unknown} in {args.list}")
            mutations = [m for m in mutations if m.id in args.only]
        if args.check:
            print(f"{args.list}: {len(mutations)} entries, every snippet found once")
            return 0
        work = Path(tempfile.mkdtemp(prefix="tracefield-mutate-"))
        try:
            copy = copy_tree(REPO, work)
            if not args.no_baseline:
                baseline(copy, mutations, args.timeout, work)
            outcomes = []
            for number, mutation in enumerate(mutations, 1):
                outcome = apply_and_run(copy, mutation, args.timeout, work)
                outcomes.append(outcome)
                print(f"[{number:>2}/{len(mutations)}] {'caught' if outcome.caught else 'MISSED':6}  {mutation.id:44} "
                      f"{outcome.seconds:5.0f} s  {outcome.detail}", flush=True)
        finally:
            if args.keep:
                print(f"copy kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    except ListError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    caught = sum(o.caught for o in outcomes)
    missed = [o.mutation for o in outcomes if not o.caught]
    score = 100.0 * caught / len(outcomes)
    print(f"\nmutation score: {caught}/{len(outcomes)} caught ({score:.0f}%)" + (", missed:" if missed else ""))
    for m in missed:
        print(f"  {m.id}: {m.bug or m.replacement} ({m.file}; ran {' '.join(m.tests)})")
    return 1 if score < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
