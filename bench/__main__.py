"""``python -m bench``: every benchmark, one summary table (bench/run.py)."""

from bench.run import main

main()
