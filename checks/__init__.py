"""Ledger of writes, logs of arrivals, and the verifier that turns them into verdicts."""

from .arrivals import ArrivalLog, Epoch, SubscriptionInfo
from .histogram import LatencyHistogram
from .ledger import WriteLedger
from .model import (KIND_DELETE, KIND_INSERT, KIND_SNAPSHOT, KIND_UPDATE, OP_DELETE, OP_INSERT,
                    OP_UPDATE, OUTCOME_ACK, OUTCOME_PENDING, OUTCOME_REJECTED, OUTCOME_UNKNOWN,
                    Workload, content_digest, seq_commit_ms)
from .verifier import (ReconcileConfig, SubscriptionResult, Thresholds, Verdict, reconcile, verdicts,
                       verdicts_to_dict)

__all__ = [
    "ArrivalLog", "Epoch", "SubscriptionInfo", "LatencyHistogram", "WriteLedger", "Workload",
    "content_digest", "seq_commit_ms", "ReconcileConfig", "SubscriptionResult", "Thresholds", "Verdict",
    "reconcile", "verdicts", "verdicts_to_dict",
    "OP_INSERT", "OP_UPDATE", "OP_DELETE", "OUTCOME_PENDING", "OUTCOME_ACK", "OUTCOME_REJECTED",
    "OUTCOME_UNKNOWN", "KIND_SNAPSHOT", "KIND_INSERT", "KIND_UPDATE", "KIND_DELETE",
]
