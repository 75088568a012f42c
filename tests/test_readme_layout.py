"""README's Layout names every module of the package (a module added without a line there fails here)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout")
    return text[start:text.index("```", text.index("```", start) + 3)]


def test_readme_layout_names_every_module():
    block = layout_block()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", block))
    modules = {p.stem for p in (ROOT / "gclib").rglob("*.py") if p.stem not in ("__init__", "_util")}
    assert modules - words == set()
