"""Give jobs recorded before the owner-and-status index their index key (run once per stack).

Jobs created, stopped or finished after the index was deployed carry `owner_status` already;
older ones are listed by status only once this has run. It is safe to run again and while
the Factory is serving: a job whose status changes meanwhile keeps the key that change wrote.

    .venv/bin/python tools/backfill_status_index.py --table <JobsTable name> [--segments 4]

AWS credentials and region come from the usual environment or profile.
"""

import argparse
from concurrent.futures import ThreadPoolExecutor

from aifactory.store import JobStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the stack's JobsTable")
    parser.add_argument("--segments", type=int, default=4, help="parallel scan segments")
    args = parser.parse_args()
    store = JobStore(args.table)
    with ThreadPoolExecutor(args.segments) as pool:
        written = sum(
            pool.map(
                lambda segment: store.backfill_status_key(
                    segment=segment, total_segments=args.segments
                ),
                range(args.segments),
            )
        )
    print(f"{written} job(s) given their owner_status key")


if __name__ == "__main__":
    main()
