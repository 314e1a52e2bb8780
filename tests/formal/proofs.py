"""Every formal proof of the design, with the mutant each must catch."""
from functools import partial

from tests.formal import Mutation, Proof
from tests.formal.fifo import FIFOHarness
from tests.formal.stream_slice import SliceHarness

ARBITER = "hw.memory.arbiter"
FIFO = "amaranth.lib.fifo"

PROOFS = [
    Proof(
        name="slice_stream_rules", component="StreamSlice (hw/memory/arbiter.py)",
        prop="o.valid held until o.ready, o.payload stable meanwhile",
        module=ARBITER, harness=partial(SliceHarness, what="rules"), mode="prove", depth=6,
        mutation=Mutation(ARBITER, "with m.If(o.ready | ~o.valid):",
                          "with m.If(o.ready | ~o.valid | i.valid):",
                          "a new input word overwrites a stalled output")),
    Proof(
        name="slice_no_loss", component="StreamSlice (hw/memory/arbiter.py)",
        prop="o carries exactly the words i took, in order; at most two held; a held word "
             "is offered",
        module=ARBITER, harness=partial(SliceHarness, what="data"), mode="bmc", depth=16,
        mutation=Mutation(ARBITER, "o.payload.eq(skid), skid_valid.eq(0)]",
                          "o.payload.eq(skid)]",
                          "the skid register is not emptied: its word is sent twice")),
    Proof(
        name="fifo_no_loss", component="SyncFIFOBuffered(width=4, depth=4) (amaranth.lib.fifo)",
        prop="reads return the written words in order, none lost or duplicated; never more "
             "than depth words taken; level counts them",
        module=FIFO, harness=partial(FIFOHarness, what="data"), mode="bmc", depth=10,
        mutation=Mutation(FIFO, "self.w_rdy.eq(inner_level != inner_depth)",
                          "self.w_rdy.eq(1)",
                          "a full FIFO still takes words (overrun)")),
    Proof(
        name="fifo_offers_words", component="SyncFIFOBuffered(width=4, depth=4) (amaranth.lib.fifo)",
        prop="a word held for two cycles is offered (r_rdy); an empty FIFO takes a word",
        module=FIFO, harness=partial(FIFOHarness, what="ready"), mode="bmc", depth=16,
        mutation=Mutation(FIFO, "inner_r_rdy.eq(inner_level != 0)",
                          "inner_r_rdy.eq(inner_level > 1)",
                          "the last word in the inner memory is never moved to the output")),
]
