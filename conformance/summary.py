"""Reads kosoku's reports of a conformance run, prints the verdicts per case
group, and says whether the run passed; with --markdown, writes the page that
CONFORMANCE.md is.

    python3 conformance/summary.py REPORTS_DIR [--markdown FILE --selection ... ]

A case passes when its message exchange is OK, NON-STRICT or INFORMATIONAL
and its closing handshake OK or INFORMATIONAL (kosoku's own `passed`).
UNIMPLEMENTED is allowed only in the groups listed in MAY_BE_UNIMPLEMENTED:
the hub does not negotiate permessage-deflate. Exit status: 0 if the run
passed, 1 if a case did not, 2 if the reports cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections import Counter

# Autobahn's names for its case groups.
GROUPS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/performance",
    "10": "Miscellaneous",
    "12": "permessage-deflate (payloads)",
    "13": "permessage-deflate (parameters)",
}
MAY_BE_UNIMPLEMENTED = {"12", "13"}

PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
CLOSE_PASSING = ("OK", "INFORMATIONAL")
# The table's columns, in order: every case lands in exactly one.
COLUMNS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "bad close")


def sort_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def verdict(entry: dict) -> str:
    """The one column a case is counted in."""
    behavior, close = entry["behavior"], entry["behaviorClose"]
    if behavior in PASSING or behavior == "UNIMPLEMENTED":
        return behavior if close in CLOSE_PASSING else "bad close"
    # FAILED, and anything that is no verdict at all (ERROR, NO_CLOSE).
    return "FAILED"


def load(reports: str) -> dict[str, dict]:
    """Case id -> its full report, for every case kosoku wrote."""
    with open(os.path.join(reports, "index.json")) as f:
        index = json.load(f)
    cases = {}
    # One agent (the hub's Server header, or its address) per run.
    for agent_cases in index.values():
        for case_id, entry in agent_cases.items():
            with open(os.path.join(reports, entry["reportfile"])) as f:
                cases[case_id] = json.load(f)
    return cases


def group_of(case_id: str) -> str:
    return case_id.split(".")[0]


def counts(cases: dict[str, dict]) -> dict[str, Counter]:
    by_group: dict[str, Counter] = {}
    for case_id, case in cases.items():
        by_group.setdefault(group_of(case_id), Counter())[verdict(case)] += 1
    return dict(sorted(by_group.items(), key=lambda kv: int(kv[0])))


def is_acceptable(case_id: str, case: dict) -> bool:
    v = verdict(case)
    if v == "UNIMPLEMENTED":
        return group_of(case_id) in MAY_BE_UNIMPLEMENTED
    return v in PASSING


def table_rows(by_group: dict[str, Counter]) -> list[list[str]]:
    rows = []
    total: Counter = Counter()
    for group, c in by_group.items():
        total.update(c)
        rows.append(
            [group, GROUPS.get(group, "?"), str(sum(c.values()))]
            + [str(c[col]) if c[col] else "" for col in COLUMNS]
        )
    rows.append(
        ["all", "", str(sum(total.values()))]
        + [str(total[col]) if total[col] else "" for col in COLUMNS]
    )
    return rows


HEADER = ["group", "", "cases", *COLUMNS]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def show_event(event: list) -> str:
    kind = event[0]
    if kind == "message":
        text = str(event[1])
        if len(text) > 40:
            text = text[:37] + "..."
        return f"{'binary' if event[2] else 'text'} message {json.dumps(text)}"
    if kind in ("ping", "pong"):
        return f"{kind} {json.dumps(str(event[1])[:20])}"
    return " ".join(str(part) for part in event)


def show_events(events: list) -> str:
    return "[" + ", ".join(show_event(e) for e in events) + "]"


def explain(case: dict) -> str:
    """Why the hub's answer differs from OK, where the events show it."""
    expected = (case.get("expected") or {}).get("OK") or []
    received = case.get("received") or []
    missing = [e for e in expected if e not in received]
    if case["behavior"] == "OK" or not missing or any(e[0] != "message" for e in missing):
        return ""
    code = case.get("remoteCloseCode")
    if (case.get("expectedClose") or {}).get("closedByMe"):
        when = "answered the client's close at once"
    else:
        when = f"failed the connection (close code {code}) at the offending frame"
    return (
        f"The hub {when}, before the echo of the valid message sent ahead of "
        "it had come back through the backend: OK expects that echo first."
    )


def reason(case: dict) -> str:
    """What happened: kosoku's verdict text, the events that decided it, and
    the close when it is not plainly OK."""
    parts = []
    if case["behavior"] != "OK":
        parts.append(f"kosoku: \"{case['result'].strip()}\"")
        why = explain(case)
        if why:
            parts.append(why)
        expected = case.get("expected") or {}
        if "OK" in expected and case["behavior"] != "UNIMPLEMENTED":
            parts.append(
                f"Received {show_events(case['received'] or [])};"
                f" OK expects {show_events(expected['OK'])}."
            )
    code = case.get("remoteCloseCode")
    wanted = (case.get("expectedClose") or {}).get("closeCode")
    if case["behaviorClose"] != "OK":
        parts.append(
            f"Close {case['behaviorClose']}: \"{case['resultClose'].strip()}\","
            f" the hub's close code {code} (the case accepts {wanted})."
        )
    elif parts:
        parts.append(f"Close OK, code {code}.")
    return " ".join(parts)


def markdown(args: argparse.Namespace, cases: dict[str, dict], rows: list[list[str]]) -> str:
    out = []
    emit = out.append
    emit("# WebSocket conformance")
    emit("")
    emit(
        "The hub's WebSocket side is checked against the cases of the Autobahn "
        "WebSocket TestSuite, run by [kosoku](https://pypi.org/project/kosoku/) "
        f"{args.kosoku_version} (a runner of the TestSuite's own case files). The "
        f"hub runs as a {args.profile} build with `--allow-anonymous --upstream`, so every "
        "client message goes up to a backend, and `examples/echo.rs` on its text "
        "port pushes each one back to its connection, text as text and binary as "
        "binary: each echo makes the full trip client → hub → backend → hub → "
        "client. This page is written by `make conformance`; it shows the last "
        "full run."
    )
    emit("")
    emit("## How to run it")
    emit("")
    emit("```sh")
    emit("make conformance         # every case below (regenerates this page)")
    emit("make conformance-quick   # the CI subset (make test runs it)")
    emit("conformance/run.sh '5.*' 6.4.1 # any cases, by kosoku's ids or globs")
    emit("```")
    emit("")
    emit(
        "kosoku is installed into `target/` by `make conformance-deps` (both "
        "targets depend on it). The reports, with kosoku's HTML pages for every "
        "case, are left in `target/conformance/reports/`."
    )
    emit("")
    emit("## What was run")
    emit("")
    emit(f"- cases: `{args.selection}` ({len(cases)} cases)")
    emit(f"- hub flags: `{args.hub_flags}`")
    emit(f"- build: {args.profile}")
    if args.seconds:
        emit(f"- time: {args.seconds} s on a {args.cores}-core machine")
    emit("")
    emit(
        "A case passes when its message exchange is OK, NON-STRICT or "
        "INFORMATIONAL and its closing handshake is OK or INFORMATIONAL. "
        "UNIMPLEMENTED is allowed only in groups 12 and 13: the hub does not "
        "negotiate permessage-deflate, so these cases see no compression and "
        "close normally. \"bad close\" counts cases whose exchange passed but "
        "whose closing handshake did not."
    )
    emit("")
    emit("## Result")
    emit("")
    emit("| " + " | ".join(HEADER) + " |")
    emit("|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADER))) + "|")
    for row in rows:
        emit("| " + " | ".join(row) + " |")
    emit("")
    timed = {k: c for k, c in cases.items() if group_of(k) == "9"}
    if timed:
        emit(
            "Case 9's durations as kosoku measured them, in ms (9.7 and 9.8 are "
            "1000 round trips each):"
        )
        emit("")
        sub: dict[str, list[str]] = {}
        for case_id in sorted(timed, key=sort_key):
            sub.setdefault(".".join(case_id.split(".")[:2]), []).append(case_id)
        emit("| cases | " + " | ".join(f"*.{i}" for i in range(1, 10)) + " |")
        emit("|---|" + "---:|" * 9)
        for prefix, ids in sub.items():
            cells = [""] * 9
            for case_id in ids:
                cells[int(case_id.split(".")[2]) - 1] = str(timed[case_id]["duration"])
            emit(f"| {prefix} | " + " | ".join(cells) + " |")
        emit("")
    emit("## Cases that are not OK")
    emit("")
    shown = [
        k
        for k in sorted(cases, key=sort_key)
        if verdict(cases[k]) != "OK"
        and not (verdict(cases[k]) == "UNIMPLEMENTED" and group_of(k) in MAY_BE_UNIMPLEMENTED)
    ]
    unimplemented = [
        k
        for k in cases
        if verdict(cases[k]) == "UNIMPLEMENTED" and group_of(k) in MAY_BE_UNIMPLEMENTED
    ]
    if unimplemented:
        emit(
            f"- {len(unimplemented)} {'case' if len(unimplemented) == 1 else 'cases'}"
            " of groups 12 and 13: UNIMPLEMENTED, "
            "because the hub answers the handshake without permessage-deflate; "
            "each then closes with 1000 as the case asks."
        )
        emit("")
    if shown:
        emit("| case | verdict (exchange / close) | what happened |")
        emit("|---|---|---|")
        for k in shown:
            c = cases[k]
            emit(
                f"| {k} | {c['behavior']} / {c['behaviorClose']} | "
                + reason(c).replace("|", "\\|").replace("\n", " ")
                + " |"
            )
        emit("")
    elif not unimplemented:
        emit("None.")
        emit("")
    # Paragraphs wrapped as the other pages are; tables, lists and code kept.
    wrapped = []
    for line in out:
        if line and not line.startswith(("|", "-", "#", "`", "make", "conformance/")):
            wrapped.extend(textwrap.wrap(line, 78, break_on_hyphens=False))
        else:
            wrapped.append(line)
    return "\n".join(wrapped) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports")
    parser.add_argument("--markdown", metavar="FILE")
    parser.add_argument("--selection", default="")
    parser.add_argument("--hub-flags", default="")
    parser.add_argument("--profile", default="release")
    parser.add_argument("--seconds", default="")
    parser.add_argument("--cores", default=str(os.cpu_count()))
    parser.add_argument("--kosoku-version", default="")
    args = parser.parse_args()
    try:
        cases = load(args.reports)
    except (OSError, ValueError, KeyError) as e:
        print(f"conformance: cannot read kosoku's reports in {args.reports}: {e}", file=sys.stderr)
        return 2
    if not cases:
        print(f"conformance: kosoku reported no case in {args.reports}", file=sys.stderr)
        return 2
    rows = table_rows(counts(cases))
    print_table(rows)
    bad = [k for k in sorted(cases, key=sort_key) if not is_acceptable(k, cases[k])]
    for k in bad:
        print(f"  {k}: {cases[k]['behavior']} / {cases[k]['behaviorClose']}: {reason(cases[k])}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(args, cases, rows))
        print(f"wrote {args.markdown}")
    if bad:
        print(f"conformance: {len(bad)} of {len(cases)} cases did not pass", file=sys.stderr)
        return 1
    print(f"conformance: all {len(cases)} cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
