"""The drain's rule: when has every subscription got what it must get?

After the writers stop, listeners stay connected until each subscription has seen, per writer, the
newest acknowledged write it must see (per-writer order then implies the earlier ones came, or are
lost), and then a short quiet; or until nothing arrived for ``--drain-quiet`` s; or ``--drain-timeout``.
The run (``Run.drain``) and the live view's drain line (``view.observer``) both read it from here; and here
the arrival logs end (``end_logs``), drained or not.
"""
from __future__ import annotations

from checks.model import OP_DELETE, OUTCOME_ACK


def newest_acks(ledgers: dict) -> dict:
    """{(table, owner, group): {writer: newest acknowledged n}}, and the same for the whole table under
    (table, "", ""): the subscriptions of a filtered workload see their (owner, group) scope."""
    last: dict = {}
    for key, led in ledgers.items():
        for (_i, writer, wseq, op, outcome, owner, group, *_rest) in led.iter_writes():
            if outcome == OUTCOME_ACK and op != OP_DELETE:  # a tombstone carries the older n
                for scope in ((key, "", ""), (key, owner, group)):
                    want = last.setdefault(scope, {})
                    if wseq > want.get(writer, 0):
                        want[writer] = wseq
    return last


def _late(st, newest: dict) -> list:
    """The writers whose newest write this subscription state has not seen yet."""
    spec = st.spec
    want = newest.get((spec.table.key, spec.owner, spec.group), {})
    return [w for w, n in want.items() if st.max_n.get(w, 0) < n]


def _watched(sessions):
    """Subscription states waited for: a session that vanished is not (its evidence is missing anyway)."""
    return (st for s in sessions if not s.vanished for st in s.subs.values())


def behind(sessions, newest: dict) -> tuple[int, int, set]:
    """(subscriptions still missing some writer's newest write, subscriptions watched, those writers)."""
    waiting, watched, writers = 0, 0, set()
    for st in _watched(sessions):
        watched += 1
        late = _late(st, newest)
        if late:
            waiting += 1
            writers.update(late)
    return waiting, watched, writers


def all_delivered(sessions, newest: dict) -> bool:
    return not any(_late(st, newest) for st in _watched(sessions))


def should_stop(*, delivered: bool, quiet_s: float, quiet_needed: float) -> bool:
    """Everything in and a short quiet (late duplicates still show), or a long quiet (the rest is lost)."""
    return (delivered and quiet_s >= min(0.5, quiet_needed)) or quiet_s >= quiet_needed


def end_logs(sessions, t: float, drained: bool = True) -> None:
    """Every arrival log ends here: what arrives later is not part of the record. Without a drain (the
    run was interrupted) changes may still have been on their way, as at a disconnect: the epochs end
    here, and a missing change counts as lost only where a later write of its writer arrived."""
    for s in sessions:
        for st in s.subs.values():
            if not drained:
                st.log.disconnected(t)
            st.log.finished(t)
