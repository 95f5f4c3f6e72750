"""Run irctest's T1 subset (../shared/IRC.md) against gchat and say how many passed.

    python -m tests.irctest.run [PYTEST ARGS...]

from the repository root (``make irctest`` does it). Environment:

- IRCTEST_DIR: where irctest lives (default ../shared/irctest, relative to the
  repository root);
- IRCTEST_MIN: the least number of passing tests that counts as success (default 0);
- IRCTEST_JOBS: pytest-xdist workers (default 2).

It prints irctest's own summary (failures and errors with their one-line assertion),
each skipped test with its reason, then ``irctest T1: passed X of Y (...)``, and exits 0 when
X >= IRCTEST_MIN, 1 when fewer passed, and pytest's own status when pytest could not
run the suite at all (usage error, internal error, interrupted, nothing collected).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTROLLER = "tests.irctest.gchat_controller"

# The T1 subset of ../shared/IRC.md: 107 tests, no accounts needed.
T1_FILES = (
    "connection_registration", "pingpong", "quit", "join", "part", "names", "who",
    "list", "messages", "topic", "isupport", "regressions", "buffering", "cap",
    "message_tags", "echo_message", "labeled_responses",
)
MARKERS = "not implementation-specific and not deprecated and not strict"
DESELECT = (
    "not Passworded and not testJoinKey and not testJoinManySingleKey and not Secret"
    " and not Oper and not WhoInvisible and not WhoServices and not Faketime"
    " and not (testTopicMode and not testTopicModern) and not TopicPrivileges"
    " and not Scram and not WhoUsernameRealName and not WhoRealNameSpaces and not Whox"
)


def count(junit_xml: Path) -> tuple[dict[str, int], list[str]]:
    """Outcomes of a pytest junit-xml report (xfail counts as skipped, xpass passed),
    and a line per skipped test: its node id and why (pytest's -rs names no test for
    irctest's unittest-style skips)."""
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    skips = []
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        outcomes = {child.tag: child for child in case}
        if "error" in outcomes:
            counts["error"] += 1
        elif "failure" in outcomes:
            counts["failed"] += 1
        elif "skipped" in outcomes:
            counts["skipped"] += 1
            path = case.get("classname", "").replace(".", "/").rsplit("/", 1)
            node = f"{path[0]}.py::{path[-1]}::{case.get('name')}"
            skips.append(f"SKIPPED {node}: {outcomes['skipped'].get('message', '')}")
        else:
            counts["passed"] += 1
    return counts, sorted(skips)


def main(argv: list[str]) -> int:
    irctest_dir = (REPO_ROOT / os.environ.get("IRCTEST_DIR", "../shared/irctest")).resolve()
    minimum = int(os.environ.get("IRCTEST_MIN", "0"))
    jobs = os.environ.get("IRCTEST_JOBS", "2")
    if not (irctest_dir / "irctest" / "server_tests").is_dir():
        print(f"irctest not found in {irctest_dir} (set IRCTEST_DIR)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), str(irctest_dir), env.get("PYTHONPATH", "")) if p
    )
    with tempfile.TemporaryDirectory(prefix="gchat-irctest-") as tmp:
        report = Path(tmp) / "junit.xml"
        command = [
            sys.executable, "-m", "pytest",
            "--controller", CONTROLLER,
            *(f"irctest/server_tests/{name}.py" for name in T1_FILES),
            "-m", MARKERS,
            "-k", DESELECT,
            "--timeout", "60",
            "-n", jobs,
            "-p", "no:cacheprovider",
            "-rfE",
            "--tb", "short",
            "--junitxml", str(report),
            *argv,
        ]
        status = subprocess.call(command, cwd=irctest_dir, env=env)
        if status not in (0, 1) or not report.exists():
            print(f"irctest did not run (pytest exit status {status})", file=sys.stderr)
            return status or 2
        counts, skips = count(report)
    print("\n".join(skips))
    total = sum(counts.values())
    print(
        f"irctest T1: passed {counts['passed']} of {total} "
        f"(failed {counts['failed']}, errors {counts['error']}, "
        f"skipped {counts['skipped']}); IRCTEST_MIN={minimum}"
    )
    return 0 if counts["passed"] >= minimum else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
