"""Print a random sample of one module's mutant names, one per line, for `make mutate SAMPLE=N`.

Usage: mutation_sample.py MODULE N [SEED]. The mutants are the ones mutmut generates for
layers/common/aifactory/MODULE.py, named as mutmut names them (aifactory.MODULE.x_...);
the same seed and source give the same sample. A run of every mutant of a module takes
hours on 2 cores, and the score of a uniform random sample estimates the module's score
(mutation_score.py prints it with its 95% interval).
"""

import random
import sys
from pathlib import Path

from mutmut.mutation.file_mutation import mutate_file_contents

LAYER = Path(__file__).resolve().parent.parent / "layers" / "common"


def sample(module: str, size: int, seed: int) -> list[str]:
    path = LAYER / "aifactory" / f"{module}.py"
    if not path.is_file():
        raise SystemExit(f"MODULE: no module {module!r} in layers/common/aifactory")
    names = [
        f"aifactory.{module}.{name}"
        for name in mutate_file_contents(str(path), path.read_text()).mutant_names
    ]
    # A reproducible sample, not a secret: a seeded generator is the point.
    return sorted(random.Random(seed).sample(names, min(size, len(names))))  # noqa: S311


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    module, size, seed = argv[1], argv[2], argv[3] if len(argv) == 4 else "0"
    if not size.isdigit() or int(size) < 1:
        raise SystemExit(f"SAMPLE: must be a positive number of mutants, not {size!r}")
    if not seed.isdigit():
        raise SystemExit(f"SEED: must be a whole number, not {seed!r}")
    print("\n".join(sample(module, int(size), int(seed))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
