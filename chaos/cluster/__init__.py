"""The chaos suite's real-process half: faults injected into live local clusters, histories checked.

`runner` (one run: cluster, workload, faults, checks, report), `scenarios` (the fault schedules), `faults` (the
nemesis: processes, nftables partitions, disk hooks, WAL damage, manager replacement), `workload` (register
clients and service churn), `history` (invoke/ok/fail/info records), `linearizability` (the Wing-Gong/Lowe
checker), `checkers` (lost writes, leaders per term, secret exposure), `timeline` (the PNG).
"""
