"""Run irctest's T1 and T2 subsets (../shared/IRC.md) against gchat; say how many passed.

    python -m tests.irctest.run [PYTEST ARGS...]

from the repository root (``make irctest`` does it). Environment:

- IRCTEST_DIR: where irctest lives (default ../shared/irctest, relative to the
  repository root);
- IRCTEST_MIN, IRCTEST_MIN_T2: the least number of passing T1 and T2 tests that counts
  as success (default 0);
- IRCTEST_JOBS: pytest-xdist workers (default 2).

It prints irctest's own summary (failures and errors with their one-line assertion),
each skipped test with its reason, then ``irctest T1: passed X of Y (...)`` and the same
for T2, and exits 0 when each tier reaches its minimum, 1 when fewer passed, and
pytest's own status when pytest could not run the suite at all (usage error, internal
error, interrupted, nothing collected).
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
# The T2 subset: 50 tests, accounts needed (the controller registers them through
# gchat's own REGISTER).
T2_FILES = ("sasl", "chathistory")
TIERS = {**{name: "T1" for name in T1_FILES}, **{name: "T2" for name in T2_FILES}}
MARKERS = "not implementation-specific and not deprecated and not strict"
DESELECT = (
    "not Passworded and not testJoinKey and not testJoinManySingleKey and not Secret"
    " and not Oper and not WhoInvisible and not WhoServices and not Faketime"
    " and not (testTopicMode and not testTopicModern) and not TopicPrivileges"
    " and not Scram and not WhoUsernameRealName and not WhoRealNameSpaces and not Whox"
)


def count(junit_xml: Path) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Outcomes per tier of a pytest junit-xml report (xfail counts as skipped, xpass
    passed), and a line per skipped test: its node id and why (pytest's -rs names no
    test for irctest's unittest-style skips)."""
    counts = {tier: {"passed": 0, "failed": 0, "error": 0, "skipped": 0} for tier in ("T1", "T2")}
    skips = []
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        outcomes = {child.tag: child for child in case}
        path = case.get("classname", "").replace(".", "/").rsplit("/", 1)
        tier = counts[TIERS.get(path[0].rsplit("/", 1)[-1], "T1")]
        if "error" in outcomes:
            tier["error"] += 1
        elif "failure" in outcomes:
            tier["failed"] += 1
        elif "skipped" in outcomes:
            tier["skipped"] += 1
            node = f"{path[0]}.py::{path[-1]}::{case.get('name')}"
            skips.append(f"SKIPPED {node}: {outcomes['skipped'].get('message', '')}")
        else:
            tier["passed"] += 1
    return counts, sorted(skips)


def main(argv: list[str]) -> int:
    irctest_dir = (REPO_ROOT / os.environ.get("IRCTEST_DIR", "../shared/irctest")).resolve()
    minimums = {"T1": int(os.environ.get("IRCTEST_MIN", "0")),
                "T2": int(os.environ.get("IRCTEST_MIN_T2", "0"))}
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
            *(f"irctest/server_tests/{name}.py" for name in (*T1_FILES, *T2_FILES)),
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
    ok = True
    for tier, tally in counts.items():
        variable = "IRCTEST_MIN" if tier == "T1" else f"IRCTEST_MIN_{tier}"
        print(
            f"irctest {tier}: passed {tally['passed']} of {sum(tally.values())} "
            f"(failed {tally['failed']}, errors {tally['error']}, "
            f"skipped {tally['skipped']}); {variable}={minimums[tier]}"
        )
        ok = ok and tally["passed"] >= minimums[tier]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
