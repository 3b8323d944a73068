"""``python -m bench``: attribution speed against its limit (bench/attribution.py)."""

from bench.attribution import main

main()
