"""Write the JSON Schema of every contract into ``schemas/jsonschema/``.

Run ``python -m schemas.generate`` after changing a model; ``--check`` exits non-zero when the
committed files differ from the models (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .deadletter import DeadLetter
from .events import Interaction, SummaryChanged, SummaryDeleted, SummaryUpdateFailed
from .items import CatalogItem
from .records import SummaryRecord

OUT_DIR = Path(__file__).parent / "jsonschema"

CONTRACTS: dict[str, Any] = {
    "interaction.v1": Interaction,
    "summary_changed.v1": SummaryChanged,
    "summary_update_failed.v1": SummaryUpdateFailed,
    "summary_deleted.v1": SummaryDeleted,
    "summary_record.v1": SummaryRecord,
    "dead_letter.v1": DeadLetter,
    "catalog_item.v1": CatalogItem,
}


def render() -> dict[str, str]:
    """Return file name -> JSON text for every contract."""
    out = {}
    for name, model in CONTRACTS.items():
        schema = TypeAdapter(model).json_schema()
        schema["$id"] = f"https://prefstream.dev/schemas/{name}.json"
        schema.setdefault("title", name)
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for fname, text in render().items():
        path = OUT_DIR / fname
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(fname)
        else:
            OUT_DIR.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"JSON Schema out of date: {', '.join(stale)}; run `python -m schemas.generate`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
