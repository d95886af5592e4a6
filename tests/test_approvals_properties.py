"""Any interleaving of submit / decide / expire / read, over two connections to the same queue, gives
each request exactly one final state, the first decision's, on both backends (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.approvals import AlreadyDecided, open_queue

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from([0, 3600]), st.integers(0, 1)),
        st.tuples(st.just("decide"), st.integers(0, 20), st.booleans(), st.integers(0, 1)),
        st.tuples(st.just("read"), st.integers(0, 20), st.integers(0, 1)),
    ),
    min_size=1,
    max_size=25,
)


def run_model(connections, ops) -> None:
    """Play ``ops`` against the queue and a dictionary model; they must agree after every step."""
    model: dict[str, tuple[str, str | None]] = {}  # id -> (status, decided_by)
    order: list[str] = []
    for op in ops:
        if op[0] == "submit":
            _, timeout, via = op
            request = connections[via].submit(
                identity="prop",
                kind="action",
                target="iam:DeleteRole",
                resource=None,
                params={"n": len(order)},
                rule="r",
                reason="x",
                timeout_s=timeout,
            )
            order.append(request.id)
            model[request.id] = ("expired", None) if timeout == 0 else ("pending", None)
            assert connections[1 - via].get(request.id).status == model[request.id][0]
        elif not order:
            continue
        elif op[0] == "decide":
            _, index, approve, via = op
            rid = order[index % len(order)]
            who = f"approver-{via}"
            if model[rid][0] == "pending":
                decided = connections[via].decide(rid, approve, approver=who)
                model[rid] = (decided.status, who)
                assert decided.status == ("approved" if approve else "denied")
            else:
                with pytest.raises(AlreadyDecided):
                    connections[via].decide(rid, approve, approver=who)
        else:
            _, index, via = op
            rid = order[index % len(order)]
            got = connections[via].get(rid)
            assert (got.status, got.decided_by) == model[rid]
    everything = {r.id: (r.status, r.decided_by) for r in connections[0].list(None) if r.id in model}
    assert everything == model
    pending = {r.id for r in connections[1].list("pending")} & set(model)
    assert pending == {rid for rid, (status, _) in model.items() if status == "pending"}


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_sqlite_any_interleaving_keeps_one_final_state(ops):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "q.db"
        connections = [open_queue(path), open_queue(path)]
        try:
            run_model(connections, ops)
        finally:
            for connection in connections:
                connection.close()


@pytest.fixture(scope="module")
def postgres_url(postgres_server) -> str:
    """One database for every example: each example's model looks only at its own ids."""
    return postgres_server.database()


@settings(max_examples=25, deadline=None)
@given(ops=OPS)
def test_postgres_any_interleaving_keeps_one_final_state(postgres_url, ops):
    connections = [open_queue(postgres_url), open_queue(postgres_url)]
    try:
        run_model(connections, ops)
    finally:
        for connection in connections:
            connection.close()
