"""mkdocs hook (named in mkdocs.yml): serve the committed benchmark plots in the site.

The plots stay in ``benchmarks/results/`` beside the JSON they are drawn from; pages refer to them
as ``results/NAME.png`` (relative to ``docs/``), so no copy can go stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parent / "results"


def on_files(files: Files, config: Any) -> Files:
    """Add every ``benchmarks/results/*.png`` as ``results/<name>.png``."""
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files
