"""The benchmarks: what seal's numbers in the README come from. Each writes JSON and a markdown table into its
output folder; the README quotes those files.

`knowledge.py` SEAL's knowledge-incorporation experiments (`seal bench knowledge`) and `report.py` their tables and
plots; `learn.py` invented documents through `seal learn`; `gate.py` the gate's accept and refuse rates;
`trials.py` reward trials per hour; `serve.py` a real server under load. The ARC benchmark is `seal.arc.bench`.
"""

from collections.abc import Callable

Report = Callable[[str], None]  # where a benchmark says what it has done, one line at a time
