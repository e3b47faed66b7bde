"""Print the mutation score per module of the shared layer, from what `make mutate` recorded.

Usage: mutation_score.py MUTANTS_DIR [MODULE] [SAMPLE_FILE]. Reads mutmut's per-file results
(the .meta files beside each mutated module) and prints, per module, killed / (killed +
survived), the other outcomes, and the surviving mutants' names (`mutmut show NAME` prints a
diff). With SAMPLE_FILE (mutant names, one per line, as mutation_sample.py writes them) only
those mutants count, and the score is printed with its 95% interval (Wilson's) as an estimate
of the whole module's.
"""

import json
import math
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code


def wilson(killed: int, tested: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% interval of a proportion estimated from a sample (Wilson's score interval)."""
    if not tested:
        return 0.0, 1.0
    p, n = killed / tested, tested
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def main(argv: list[str]) -> int:
    mutants = Path(argv[1]) / "aifactory"
    only = argv[2] if len(argv) > 2 and argv[2] else None
    sample = set(Path(argv[3]).read_text().split()) if len(argv) > 3 and argv[3] else None
    rows, survivors = [], []
    for meta in sorted(mutants.glob("*.py.meta")):
        module = meta.name.removesuffix(".py.meta")
        if only and module != only:
            continue
        results = json.loads(meta.read_text())["exit_code_by_key"]
        if sample is not None:
            results = {k: v for k, v in results.items() if k in sample}
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
        if sample is not None and tested:
            low, high = wilson(counts["killed"] + counts["timeout"], tested)
            others = f"sample of {len(results)}: 95% interval {low:.1%} to {high:.1%}" + (
                f"; {others}" if others else ""
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
