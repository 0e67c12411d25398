"""Every JSON example of docs/protocol.md parses with the client's types and re-encodes to the same
JSON (numbers as written: 20 stays 20, 20.0 stays 20.0).

The extraction rule, shared with the Rust half of this check: every fenced block opened by
```json (indented or not) is one JSON value, or else one JSON value per non-blank line. A block
that is neither (an example with `...` elisions) is skipped and counted; it must contain `...`.
A value with `op` is a request, with `ok` a response (its result typed by the op of the latest
request example with the same id), with `event` an event line, and anything else a fault spec.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import faultd_client as fc
from faultd_client.errors import ERRORS, error_from_wire

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def examples(text: str) -> Tuple[List[Any], List[str]]:
    """(the JSON values of the fenced json blocks in document order, the blocks skipped)."""
    values: List[Any] = []
    skipped: List[str] = []
    for block in re.findall(r"^[ \t]*```json\n(.*?)^[ \t]*```", text, flags=re.S | re.M):
        try:
            values.append(json.loads(block))
            continue
        except ValueError:
            pass
        try:
            values.extend(json.loads(line) for line in block.splitlines() if line.strip())
        except ValueError:
            skipped.append(block)
    return values, skipped


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def views(key: str) -> Callable[[Any], Dict[str, Any]]:
    return lambda result: {key: [fc.FaultView.from_wire(v).to_wire() for v in result[key]]}


RESULTS: Dict[str, Callable[[Any], Any]] = {
    "hello": lambda r: fc.Hello.from_wire(r).to_wire(),
    "apply": lambda r: fc.FaultView.from_wire(r).to_wire(),
    "dry_run": lambda r: fc.Plan.from_wire(r).to_wire(),
    "renew": lambda r: fc.FaultView.from_wire(r).to_wire(),
    "get": lambda r: fc.FaultView.from_wire(r).to_wire(),
    "revoke": lambda r: fc.FaultView.from_wire(r).to_wire(),
    "list": views("faults"),
    "clear": views("revoked"),
    "metrics": lambda r: fc.Metrics.from_wire(r).to_wire(),
    "watch": lambda r: dict(r),
}


def test_every_protocol_example_round_trips(capsys: Any) -> None:
    values, skipped = examples(PROTOCOL_MD.read_text())
    assert all("..." in block for block in skipped), skipped
    counts = {"request": 0, "response": 0, "error": 0, "event": 0, "spec": 0}
    ops_by_id: Dict[str, str] = {}
    for value in values:
        assert isinstance(value, dict), value
        if "op" in value:
            counts["request"] += 1
            op = "dry_run" if value.get("dry_run") else value["op"]
            ops_by_id[canonical(value.get("id"))] = op
            again = dict(value)
            if "fault" in value:
                again["fault"] = fc.Fault.from_wire(value["fault"]).to_wire()
            assert canonical(again) == canonical(value)
        elif "ok" in value and value["ok"]:
            counts["response"] += 1
            op = ops_by_id[canonical(value["id"])]
            again = dict(value, result=RESULTS[op](value["result"]))
            assert canonical(again) == canonical(value), op
        elif "ok" in value:
            counts["error"] += 1
            error = error_from_wire(value["error"])
            assert type(error) is ERRORS[value["error"]["code"]]
            assert canonical(dict(value, error=error.to_wire())) == canonical(value)
        elif "event" in value:
            counts["event"] += 1
            assert canonical(fc.Event.from_wire(value).to_wire()) == canonical(value)
        else:
            counts["spec"] += 1
            assert canonical(fc.Fault.from_wire(value).to_wire()) == canonical(value)
    with capsys.disabled():
        print(f"\ndocs/protocol.md: {len(values)} examples {counts}, {len(skipped)} blocks "
              "skipped for `...` elisions")
    # Every op's request and most answers are shown; a doc losing them should be noticed.
    assert counts["request"] >= 12 and counts["response"] >= 6 and counts["error"] >= 3
    assert counts["event"] >= 1 and counts["spec"] >= 2
