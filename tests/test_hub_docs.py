"""docs/weights.md shows the registry as it is."""

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_zoo_table_in_docs_matches_registry():
    spec = importlib.util.spec_from_file_location("zoo_table", DOCS / "zoo_table.py")
    zoo_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo_table)
    text = (DOCS / "weights.md").read_text(encoding="utf-8")
    assert zoo_table.current_section(text) == zoo_table.generated(), "run: python docs/zoo_table.py --write"
