#!/usr/bin/env python
"""Regenerates the parts of the docs that are generated from the code.

Today: the serving guide's table of signatures and outputs, from
`aradals_tf.export.layout`. `tests/test_docs.py` fails when the committed page
differs from what this writes. Usage: `.venv/bin/python scripts/update_docs.py`.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, ROOT)

from aradals_tf import atomic  # noqa: E402
from aradals_tf.export import layout  # noqa: E402

SERVING_PAGE = os.path.join(ROOT, "docs", "guide", "serving.md")
BEGIN, END = "<!-- signatures-table -->", "<!-- /signatures-table -->"


def with_signatures_table(text):
    """`text` with the block between the markers replaced by the generated table."""
    block = f"{BEGIN}\n{layout.signatures_markdown()}\n{END}"
    updated, count = re.subn(
        re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S
    )
    if count != 1:
        raise ValueError(f"{SERVING_PAGE} must hold the markers {BEGIN} ... {END} once.")
    return updated


def main():
    text = open(SERVING_PAGE).read()
    updated = with_signatures_table(text)
    if updated != text:
        with atomic.atomic_file(SERVING_PAGE) as handle:
            handle.write(updated)
        print(f"Updated {os.path.relpath(SERVING_PAGE, ROOT)}")


if __name__ == "__main__":
    main()
