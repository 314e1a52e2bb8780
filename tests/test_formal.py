"""Formal proofs of the stream blocks (tests/formal): each proof passes on the design and
fails on its mutant. The quick ones run in the default tier; the long ones are `slow`
(`make formal` runs them all)."""
import pytest

from tests.formal import Mutation, check, mutate
from tests.formal.proofs import PROOFS


@pytest.mark.parametrize("proof", [p if p.quick else pytest.param(p, marks=pytest.mark.slow)
                                   for p in PROOFS], ids=lambda p: p.name)
def test_proof(proof, tmp_path):
    r = check(proof, tmp_path)
    assert r.verdict == "PASS", f"{proof.name}: {proof.prop}: {r.verdict} (trace under " \
                                f"{tmp_path / proof.name})"
    assert r.mutant_verdict == "FAIL", f"{proof.name}: the mutant ({proof.mutation.why}) " \
                                       f"was not caught: {r.mutant_verdict}"


def test_at_least_five_properties_of_four_components():
    assert len(PROOFS) >= 5
    assert len({p.component.split(" ")[0].split("(")[0] for p in PROOFS}) >= 4


def test_a_mutation_whose_text_is_gone_is_an_error():
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutate(Mutation("hw.memory.arbiter", "no such text", "x", "nothing"))
