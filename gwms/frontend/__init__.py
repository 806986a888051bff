"""The VO frontend: cluster jobs, match them to entries, decide how many glideins to ask for.

``clustering``, ``matching`` and ``policy`` are pure decision functions (no I/O), fed by
the daemon and benchmarked alone by ``bench/frontend_match.py``.
"""
