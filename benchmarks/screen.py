"""Leakage screen benchmarks: ``planted`` (recall per leak kind, false quarantines) and ``throughput``.

    .venv/bin/python benchmarks/screen.py planted --source mts-dialog --json-out planted.json
    .venv/bin/python benchmarks/screen.py throughput --json-out throughput.json

Each part is its own script (``screen_planted.py``, ``screen_throughput.py``);
the arguments after the part name go to it unchanged (``--help`` lists them).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str]) -> int:
    parts = ("planted", "throughput")
    if not argv or argv[0] not in parts:
        print(__doc__.strip(), file=sys.stderr)
        print(f"\nchoose a part: {' | '.join(parts)}", file=sys.stderr)
        return 2
    if argv[0] == "planted":
        import screen_planted

        return screen_planted.main(argv[1:])
    import screen_throughput

    return screen_throughput.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
