"""Write a labelled set of drawn product photos for ``vitrine eval run``.

    python bench/eval_set.py OUT [--photos 30]

OUT/set.jsonl labels OUT/photos/item-NNN.jpg with the leaf category and colour each drawing
shows (tests/support/eval_set.py).  A stand-in for a shop's own labelled photos: the commands
and the report are the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from tests.support.eval_set import write_eval_set  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--photos", type=int, default=30)
    args = parser.parse_args()
    print(write_eval_set(args.out, args.photos))


if __name__ == "__main__":
    main()
