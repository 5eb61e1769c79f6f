"""Distributed runs: Locust's master/worker mode (`--processes N`, or `--master` + `--worker`), one verdict.

The master provisions (namespace, accounts), holds the start barrier, reads the server's counters and
gives the verdict; workers run the writer and listener users. Everything between them goes through
Locust's own channel as custom messages (`klt:*`), batched, with large payloads chunked
(`CHUNK` bytes per message, at most `MAX_TRANSFER` bytes per payload) and acknowledged.

During the run
    worker -> master  klt:hello {hostname, pid}          master -> worker  klt:welcome {accounts' names, go, ...}
    worker -> master  klt:claim [[req, kind], ...]        master -> worker  klt:claimed [[req, account|None, index]]
    worker -> master  klt:ready {ready: [...], failed: [...]}   (listener subscribed and ready / failed)
    master -> worker  klt:go {t}                          (the start barrier opened: writers may write)
    worker -> master  klt:ntp {i, t0}                     master -> worker  klt:ntp_r {i, t0, t1, t2}
                      (clock offset: rounds after the welcome and again at the end; lowest round trips)

End of run (inside the master's test_stop, which Locust fires *before* it tells workers to stop and
then gives them only 0.5 s: so everything is collected here, by our own flush-and-acknowledge):
    1. master -> worker klt:end {phase: ledger}: writers stop, in-flight writes settle, final clock
       rounds; the worker ships its ledgers (times put on the master's clock) -> klt:x ... klt:xack
    2. the master merges the ledgers (`WriteLedger.extend`) and ships the merged ledger to every worker;
       each worker drains its listeners against it and answers klt:drained
    3. the master reads system.live (L7) while every listener is still connected
    4. master -> worker klt:end {phase: results}: the worker closes its sessions, puts its arrival logs
       on the master's clock, reconciles each subscription against the merged ledger and ships the
       results (counters, samples, mergeable latency histograms, first-arrival arrays for L6)
    5. the master calls `verdicts` and writes the report (`report["distributed"]`); klt:end {phase: done}

A worker that stops answering (or that Locust marks missing for `MISSING_GRACE` s) is *lost*: the run
flags `ledger_partial` (its writes are unknown) and `missing_listeners` (naming the worker), so no
scenario can pass. Worker sessions are owned by the run, not by Locust's users: they survive Locust
stopping the users until the end handshake is over.

Modules: ``messages`` (limits and the clock), ``transfers`` (chunked, acknowledged payloads), ``master``
(MasterRun, Coordinator), ``worker`` (WorkerRun, WorkerAgent), ``hooks`` (test hooks). The plugin
(``loadtest.plugin``) makes the Coordinator or the WorkerAgent at init and routes Locust's events to them.
"""
