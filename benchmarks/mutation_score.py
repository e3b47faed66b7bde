"""Print the mutation score per module of the shared layer, from what `make mutate` recorded.

Usage: mutation_score.py MUTANTS_DIR [MODULE]. Reads mutmut's per-file results (the .meta
files beside each mutated module) and prints, per module, killed / (killed + survived), the
other outcomes, and the surviving mutants' names (`mutmut show NAME` prints a diff).
"""

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code


def main(argv: list[str]) -> int:
    mutants = Path(argv[1]) / "aifactory"
    only = argv[2] if len(argv) > 2 and argv[2] else None
    rows, survivors = [], []
    for meta in sorted(mutants.glob("*.py.meta")):
        module = meta.name.removesuffix(".py.meta")
        if only and module != only:
            continue
        results = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(status_by_exit_code[code] for code in results.values())
        if not results or counts["not checked"] == len(results):
            continue
        tested = counts["killed"] + counts["timeout"] + counts["survived"]
        score = (counts["killed"] + counts["timeout"]) / tested if tested else 0.0
        others = ", ".join(
            f"{n} {status}"
            for status, n in sorted(counts.items())
            if status not in ("killed", "survived", "timeout")
        )
        rows.append((module, counts["killed"] + counts["timeout"], tested, score, others))
        survivors += [k for k, code in results.items() if status_by_exit_code[code] == "survived"]
    if not rows:
        print("no mutation results yet: run `make mutate`")
        return 1
    print(f"{'module':<12} {'killed':>7} {'tested':>7} {'score':>7}  other")
    for module, killed, tested, score, others in rows:
        print(f"{module:<12} {killed:>7} {tested:>7} {score:>7.1%}  {others}")
    if survivors:
        print(f"\n{len(survivors)} surviving mutants:")
        for key in survivors:
            print(f"  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
