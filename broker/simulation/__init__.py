"""Trace-replay simulator for deadline-aware spot policies (the package root does no I/O).

Layout, one concept per module:

* ``traces`` — reads the shared spot-trace JSON files (the only module here that touches disk
  apart from ``published`` and ``report``).
* ``market`` — a window of traces as the engine sees it: venues, per-tick availability and
  prices, egress between venues (pure).
* ``engine`` — replays one policy over one market window and returns a ``RunResult`` (pure).
* ``baselines`` — on-demand, greedy spot, Uniform Progress, UP(S) (pure).
* ``optimum`` — the offline optimum by dynamic programming, re-costed through the engine (pure).
* ``registry`` — policy name → factory; add new policies there.
* ``scenarios`` — the three benchmark scenarios, their parameters and windows (pure).
* ``runner`` — runs scenarios × policies, optionally on a process pool.
* ``metrics`` — per-policy summaries and the gap to the optimum (pure).
* ``published`` — reads SkyNomad's published result CSVs for comparison (reads files).
* ``report`` — Markdown, CSV and the PNG plot (writes files; matplotlib imported lazily).
* ``suite`` — the whole benchmark, as ``gpubroker simulate`` and ``bench/bench_policies.py`` run it.

The optimum needs ``numpy``; the plot needs ``matplotlib``.
"""
