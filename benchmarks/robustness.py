"""Bad-input robustness table: every case of the matrix, its expected and actual outcome.

Run from the repository root (the project installed in ``.venv``)::

    METEORA_NUM_THREADS=1 .venv/bin/python benchmarks/robustness.py            # ~2-3 minutes on 2 busy cores
    .venv/bin/python benchmarks/robustness.py --group cli --out /tmp/r.json    # one group

The cases live beside this script in ``benchmarks/robustness_cases.py`` (the same matrix
``tests/test_bad_inputs.py`` runs, one test per case): each performs one bad (or tricky but valid) action against the
public API or the ``meteora`` command line, on a tiny random encoder, loopback only. The
actual outcome of every case is classified as

* ``clear_error``: a :class:`~meteora.errors.MeteoraError` (or, for the command line,
  exit status 2 with a message and no traceback);
* ``correct_result``: the call succeeded and its correctness check held;
* ``raw_traceback``: any other exception (or a command that crashed);
* ``silent_wrong``: bad input accepted, or a result that failed its check;
* ``data_loss``: a user's file or folder was changed or removed;

and ``passed`` says whether it is the expected outcome (for errors: the expected class
and a message naming what and where, e.g. ``file:line``). The results file holds the
command, counts by outcome, and one row per case (id, group, expected, actual, message
head). Temporary paths in messages are written as ``$TMPDIR/...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from robustness_cases import OUTCOMES, Env, build_cases, run_case  # noqa: E402  (beside this script)

from meteora.bench.report import command_line, write_results_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

_TMP = re.compile(r"(/tmp|/var/tmp|/private/var/folders)/[^\s'\"():,]*")


def _scrub(text: str, root: Path) -> str:
    """No machine paths in the results: the scratch folder, repo and home become placeholders."""
    text = text.replace(str(root), "$TMPDIR/robustness").replace(str(REPO), ".").replace(str(Path.home()), "~")
    return _TMP.sub(lambda m: "$TMPDIR/" + Path(m.group(0)).name, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "robustness.json"))
    parser.add_argument("--group", action="append", default=None, help="only these groups (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    cases = [c for c in build_cases() if args.group is None or c.group in args.group]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meteora-robustness-") as tmp:
        root = Path(tmp)
        env = Env(root)
        for case in cases:
            outcome = run_case(case, env)
            rows.append(
                {
                    "id": case.id,
                    "group": case.group,
                    "expected": case.expected,
                    "actual": outcome.actual,
                    "passed": outcome.passed,
                    "error_type": outcome.error_type,
                    "message": _scrub(outcome.message, root),
                    "seconds": round(outcome.seconds, 3),
                }
            )
            if not outcome.passed:
                print(f"FAIL {case.id}: expected {case.expected}, got {outcome.actual}: {rows[-1]['message'][:160]}")
    counts = Counter(r["actual"] for r in rows)
    by_group: dict[str, dict[str, int]] = {}
    for r in rows:
        g = by_group.setdefault(r["group"], {"cases": 0, "passed": 0})
        g["cases"] += 1
        g["passed"] += int(r["passed"])
    payload = {
        "command": command_line(),
        "description": "bad-input matrix (benchmarks/robustness_cases.py) against the public API and CLI; "
        "tiny random encoder, Reranker(generator=None), loopback only",
        "cases": len(rows),
        "passed": sum(r["passed"] for r in rows),
        "counts": {k: counts.get(k, 0) for k in OUTCOMES},
        "by_group": by_group,
        "failing": [r["id"] for r in rows if not r["passed"]],
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    write_results_json(args.out, payload)
    print(f"{payload['passed']}/{len(rows)} cases as expected; outcomes: {payload['counts']}; wrote {args.out}")
    return 0 if payload["passed"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
