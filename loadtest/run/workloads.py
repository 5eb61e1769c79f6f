"""The two ready-made workloads: what tables exist, what a write looks like, what a listener subscribes to.

Every workload table follows the row convention of docs/architecture.md: ``id = "{writer}:{k}"``,
``writer``, ``n`` (the writer's sequence number of the write that made this version), plus content
columns. The verifier identifies every arrival from ``writer`` and ``n`` alone.
"""
from __future__ import annotations

import random
import time
from array import array
from dataclasses import dataclass

import orjson

from checks.model import OP_DELETE, OP_INSERT, OP_UPDATE, json_bytes

SHARED = "shared"
AGENT_CHAT = "agent-chat"
BOTH = "both"
WORKLOAD_CHOICES = (SHARED, AGENT_CHAT, BOTH)


@dataclass(frozen=True)
class Statement:
    """One write as it goes on the wire, plus what the ledger needs to know about it."""

    sql: str
    params: list
    op: int  # checks.model.OP_*
    pk: str
    values: dict  # full row content after the write
    owner: str = ""
    group: str = ""
    name: str = ""  # Locust request name
    # a multi-row INSERT's further rows, (pk, values) each with n = the first's n + 1, + 2, ... (the ledger
    # records each row as a write of its own)
    rows: tuple = ()


@dataclass(frozen=True)
class TableSpec:
    key: str  # "events" / "messages": which of the workload's tables
    kind: str  # "shared" | "user"
    ddl: str
    content_columns: tuple


def events_table(ns: str) -> TableSpec:
    return TableSpec(
        key="events",
        kind="shared",
        ddl=(
            f"CREATE SHARED TABLE IF NOT EXISTS {ns}.events ("
            "id TEXT PRIMARY KEY, writer TEXT NOT NULL, n BIGINT NOT NULL, payload TEXT NOT NULL"
            ") WITH (ACCESS_LEVEL = 'PUBLIC')"
        ),
        content_columns=("payload",),
    )


def messages_table(ns: str) -> TableSpec:
    return TableSpec(
        key="messages",
        kind="user",
        ddl=(
            f"CREATE USER TABLE IF NOT EXISTS {ns}.messages ("
            "id TEXT PRIMARY KEY, conversation TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, "
            "writer TEXT NOT NULL, n BIGINT NOT NULL, created_at TIMESTAMP NOT NULL)"
        ),
        content_columns=("conversation", "role", "content", "created_at"),
    )


def conversation_of(human: str) -> str:
    return f"conv_{human}"


def tables_for(workload: str, ns: str) -> list[TableSpec]:
    if workload == SHARED:
        return [events_table(ns)]
    if workload == AGENT_CHAT:
        return [messages_table(ns)]
    return [events_table(ns), messages_table(ns)]


@dataclass(frozen=True)
class SubscriptionSpec:
    table: TableSpec
    subscription_id: str
    sql: str
    owner: str  # "" for a shared table
    group: str  # "" = no filter


def subscriptions_for(workload: str, ns: str, listener: str) -> list[SubscriptionSpec]:
    subs = []
    if workload in (SHARED, BOTH):
        t = events_table(ns)
        subs.append(SubscriptionSpec(t, "events", f"SELECT * FROM {ns}.events", "", ""))
    if workload in (AGENT_CHAT, BOTH):
        t = messages_table(ns)
        conv = conversation_of(listener)
        subs.append(
            SubscriptionSpec(t, "chat", f"SELECT * FROM {ns}.messages WHERE conversation = '{conv}'", listener, conv)
        )
    return subs


@dataclass
class OpMix:
    insert: float = 0.6
    update: float = 0.3
    delete: float = 0.1

    @classmethod
    def parse(cls, text: str) -> "OpMix":
        """'insert=60,update=30,delete=10' (weights, any scale)."""
        weights = {"insert": 0.0, "update": 0.0, "delete": 0.0}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            name = name.strip().lower()
            if name not in weights:
                raise ValueError(f"unknown operation {name!r} in op mix {text!r} (use insert/update/delete)")
            weights[name] = float(value)
        if weights["insert"] <= 0:
            raise ValueError(f"op mix {text!r} must give inserts a positive weight")
        total = sum(weights.values())
        return cls(**{k: v / total for k, v in weights.items()})


class WriteGenerator:
    """Chooses the next write of one writer. Pure: no I/O, so it is easy to test and to reason about.

    ``next_write(n)`` proposes a write without changing any state; ``confirm(stmt, committed)`` applies
    it once the server has answered. A write whose outcome is unknown is forgotten (its row is never
    touched again), so that no later write depends on a state nobody knows.
    """

    TOKENS = ("Sure", ",", " here", " is", " the", " answer", ":", " forty", "-two", ".")

    def __init__(self, workload: str, ns: str, writer: str, humans: list[str], mix: OpMix,
                 stream_tokens: int = 5, payload_bytes: int = 64, rng: random.Random | None = None,
                 rows_per_insert: int = 1):
        self.workload, self.ns, self.writer = workload, ns, writer
        self.rows_per_insert = max(1, int(rows_per_insert))
        self.humans = humans
        self.mix = mix
        self.stream_tokens = stream_tokens
        self.payload_bytes = payload_bytes
        self.rng = rng or random.Random(writer)
        # table -> {pk: values as JSON bytes} of the rows this writer may still change, the owner of a user
        # table's row apart, and the rows' numbers in an array for a random pick in O(1). Nothing here is
        # tracked by the cyclic GC: an (owner, values) tuple per row was, and every full collection walked
        # them all (the generator's event loop paused longer the longer a run went: 213 ms at 170k rows in
        # a spec run); and a list(live) per update or delete copied every key.
        self.live: dict[str, dict] = {"events": {}, "messages": {}}    # table -> {pk: JSON bytes}
        self.owner: dict[str, dict] = {"events": {}, "messages": {}}    # table -> {pk: owner}
        self._keys: dict[str, _Keys] = {"events": _Keys(), "messages": _Keys()}
        self.streaming: tuple | None = None  # (pk, tokens_left)
        self._turn = 0

    def _table(self) -> str:
        if self.workload == SHARED or not self.humans:
            return "events"
        if self.workload == AGENT_CHAT:
            return "messages"
        self._turn += 1
        return "events" if self._turn % 2 else "messages"

    def _op(self, live: dict) -> str:
        if not live:
            return "insert"
        r = self.rng.random()
        if r < self.mix.insert:
            return "insert"
        if r < self.mix.insert + self.mix.update or self.mix.delete <= 0:
            return "update"
        return "delete"

    def next_table(self) -> str:
        """The table of the next write (a streamed reply keeps its writer on the messages table)."""
        if self.streaming is not None and self.streaming[0] in self.live["messages"]:
            return "messages"
        self.streaming = None
        return self._table()

    def next_write(self, table: str, n: int) -> Statement:
        """The next write on ``table`` (from ``next_table``); ``n`` is its sequence number in that table."""
        if table == "messages" and self.streaming is not None:
            return self._stream_token(n)
        op = self._op(self.live[table])
        if table == "events":
            return self._events_write(op, n)
        return self._chat_write(op, n)

    def confirm(self, stmt: Statement, committed: bool | None) -> None:
        """committed: True (acknowledged), False (rejected: nothing happened), None (unknown)."""
        table = "events" if stmt.name.startswith("events") else "messages"
        if committed is None:
            self._forget(table, stmt.pk)
            if self.streaming and self.streaming[0] == stmt.pk:
                self.streaming = None
            return
        if not committed:
            return
        if stmt.op == OP_DELETE:
            self._forget(table, stmt.pk)
            return
        self._keep(table, stmt.pk, stmt.owner, stmt.values)
        for pk, values in stmt.rows:
            self._keep(table, pk, stmt.owner, values)
        if stmt.name == "chat STREAM":
            pk, left = self.streaming
            self.streaming = (pk, left - 1) if left > 1 else None
        elif stmt.op == OP_INSERT and stmt.values.get("role") == "assistant" and self.stream_tokens > 0:
            self.streaming = (stmt.pk, self.stream_tokens)

    def _keep(self, table: str, pk: str, owner: str, values: dict) -> None:
        live = self.live[table]
        if pk not in live:
            self._keys[table].add(_number(pk))
        live[pk] = json_bytes(values)
        if owner:
            self.owner[table][pk] = owner

    def _forget(self, table: str, pk: str) -> None:
        if self.live[table].pop(pk, None) is not None:
            self._keys[table].remove(_number(pk))
            self.owner[table].pop(pk, None)

    def _pick(self, table: str) -> tuple[str, dict]:
        """A live row of ``table``, at random: (pk, its values)."""
        pk = f"{self.writer}:{self._keys[table].pick(self.rng)}"
        return pk, orjson.loads(self.live[table][pk])

    def _payload(self, n: int) -> str:
        base = f"{self.writer}#{n}:"
        return base + "x" * max(0, self.payload_bytes - len(base))

    def _events_write(self, op: str, n: int) -> Statement:
        ns = self.ns
        if op == "insert":
            rows = [(f"{self.writer}:{m}", {"writer": self.writer, "n": m, "payload": self._payload(m)})
                    for m in range(n, n + self.rows_per_insert)]
            values, params = _values([(pk, self.writer, v["n"], v["payload"]) for pk, v in rows])
            return Statement(f"INSERT INTO {ns}.events (id, writer, n, payload) VALUES {values}",
                             params, OP_INSERT, rows[0][0], rows[0][1], name="events INSERT", rows=tuple(rows[1:]))
        pk, old = self._pick("events")
        if op == "update":
            values = dict(old, n=n, payload=self._payload(n))
            return Statement(f"UPDATE {ns}.events SET n = $1, payload = $2 WHERE id = $3",
                             [n, values["payload"], pk], OP_UPDATE, pk, values, name="events UPDATE")
        return Statement(f"DELETE FROM {ns}.events WHERE id = $1", [pk], OP_DELETE, pk, old, name="events DELETE")

    def _chat_write(self, op: str, n: int) -> Statement:
        ns = self.ns
        if op == "insert":
            human = self.rng.choice(self.humans)
            # a streamed reply is one row updated token by token; a multi-row INSERT is questions only
            streamed = self.rows_per_insert == 1 and self.stream_tokens > 0 and self.rng.random() < 0.5
            role = "assistant" if streamed else "user"
            # created_at is the agent's own clock (µs): the listener must get exactly this timestamp back
            created_at = int(time.time() * 1_000_000)
            rows = [(f"{self.writer}:{m}",
                     {"conversation": conversation_of(human), "role": role,
                      "content": self.TOKENS[0] if streamed else f"question {m} for {human}",
                      "created_at": created_at, "writer": self.writer, "n": m})
                    for m in range(n, n + self.rows_per_insert)]
            values, params = _values([(pk, v["conversation"], role, v["content"], created_at, self.writer, v["n"])
                                      for pk, v in rows])
            return Statement(
                f"EXECUTE AS USER '{human}' (INSERT INTO {ns}.messages (id, conversation, role, content, created_at, "
                f"writer, n) VALUES {values})",
                params, OP_INSERT, rows[0][0], rows[0][1], owner=human, group=conversation_of(human),
                name="chat INSERT", rows=tuple(rows[1:]))
        pk, old = self._pick("messages")
        human = self.owner["messages"][pk]
        if op == "update":
            values = dict(old, n=n, content=old["content"] + " (edited)")
            return self._chat_update(pk, human, values, n, "chat UPDATE")
        return Statement(f"EXECUTE AS USER '{human}' (DELETE FROM {ns}.messages WHERE id = $1)", [pk], OP_DELETE,
                         pk, old, owner=human, group=old["conversation"], name="chat DELETE")

    def _chat_update(self, pk: str, human: str, values: dict, n: int, name: str) -> Statement:
        return Statement(
            f"EXECUTE AS USER '{human}' (UPDATE {self.ns}.messages SET content = $1, n = $2 WHERE id = $3)",
            [values["content"], n, pk], OP_UPDATE, pk, values, owner=human, group=values["conversation"], name=name)

    def _stream_token(self, n: int) -> Statement:
        pk, left = self.streaming
        human, old = self.owner["messages"][pk], orjson.loads(self.live["messages"][pk])
        token = self.TOKENS[(self.stream_tokens - left + 1) % len(self.TOKENS)]
        values = dict(old, n=n, content=old["content"] + token)
        return self._chat_update(pk, human, values, n, "chat STREAM")


def _number(pk: str) -> int:
    """m of a writer's own key "{writer}:{m}"."""
    return int(pk.rpartition(":")[2])


class _Keys:
    """A set of row numbers with a uniform random pick in O(1): an array, and each number's place in it."""

    __slots__ = ("keys", "at")

    def __init__(self):
        self.keys = array("q")
        self.at: dict[int, int] = {}

    def add(self, key: int) -> None:
        self.at[key] = len(self.keys)
        self.keys.append(key)

    def remove(self, key: int) -> None:
        i = self.at.pop(key)
        last = self.keys.pop()
        if last != key:          # the last number takes the removed one's place
            self.keys[i] = last
            self.at[last] = i

    def pick(self, rng: random.Random) -> int:
        return self.keys[rng.randrange(len(self.keys))]


def _values(rows: list[tuple]) -> tuple[str, list]:
    """The VALUES of an INSERT and its parameters: one row with $1, $2, ... parameters; several rows as
    SQL literals, because KalamDB takes at most 50 parameters per statement (hard-coded, protocol §1.4)."""
    if len(rows) == 1:
        return "(" + ", ".join(f"${i + 1}" for i in range(len(rows[0]))) + ")", list(rows[0])
    return ", ".join("(" + ", ".join(map(_literal, row)) + ")" for row in rows), []


def _literal(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"no SQL literal for {value!r}")
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"
