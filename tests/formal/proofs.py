"""Every formal proof of the design, with the mutant each must catch."""
from functools import partial

from tests.formal import Mutation, Proof
from tests.formal.arbiter import WAIT_BOUND, ArbiterHarness
from tests.formal.fifo import DEPTH, WIDTH, FIFOHarness
from tests.formal.framing import MAX_PAYLOAD, RX_BOUND, LinkHarness
from tests.formal.stream_slice import SliceHarness

ARBITER = "hw.memory.arbiter"
FRAMING = "hw.link.framing"
FIFO = "amaranth.lib.fifo"
FIFO_NAME = f"SyncFIFOBuffered(width={WIDTH}, depth={DEPTH}) (amaranth.lib.fifo)"

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
        name="fifo_no_loss", component=FIFO_NAME,
        prop="reads return the written words in order, none lost or duplicated; never more "
             "than depth words taken; level counts them",
        module=FIFO, harness=partial(FIFOHarness, what="data"), mode="bmc", depth=10,
        mutation=Mutation(FIFO, "self.w_rdy.eq(inner_level != inner_depth)",
                          "self.w_rdy.eq(1)",
                          "a full FIFO still takes words (overrun)")),
    Proof(
        name="fifo_offers_words", component=FIFO_NAME,
        prop="a word held for two cycles is offered (r_rdy); an empty FIFO takes a word",
        module=FIFO, harness=partial(FIFOHarness, what="ready"), mode="bmc", depth=16,
        mutation=Mutation(FIFO, "inner_r_rdy.eq(inner_level != 0)",
                          "inner_r_rdy.eq(inner_level > 1)",
                          "the last word in the inner memory is never moved to the output")),
    Proof(
        name="arbiter_bus_stream_rules", component="MemoryArbiter(2), register_bus=False",
        prop="bus.cmd valid held until ready, from the same master, payload stable",
        module=ARBITER, harness=partial(ArbiterHarness, what="rules"), mode="bmc", depth=12,
        mutation=Mutation(ARBITER, "with m.If(offered):", "with m.If(0):",
                          "an offered command is withdrawn when another master asks")),
    Proof(
        name="arbiter_routing", component="MemoryArbiter(2), register_bus=False",
        prop="each bus command is one master's; no read or write word lost, duplicated or "
             "given to or taken from the wrong master; commands in flight bounded",
        module=ARBITER, harness=partial(ArbiterHarness, what="routing"), mode="bmc", depth=10,
        mutation=Mutation(ARBITER, "Mux(take_q & ~write_q, length_q, 0)",
                          "Mux(take_q & ~write_q, length_q - 1, 0)",
                          "one read word too few is counted: the last goes to the next owner")),
    Proof(
        name="arbiter_routing_deep", component="MemoryArbiter(2), register_bus=False",
        prop="each bus command is one master's; no read or write word lost, duplicated or "
             "given to or taken from the wrong master; commands in flight bounded",
        module=ARBITER, harness=partial(ArbiterHarness, what="routing"), mode="bmc", depth=16,
        quick=False,
        mutation=Mutation(ARBITER, "Mux(take_q & ~write_q, length_q, 0)",
                          "Mux(take_q & ~write_q, length_q - 1, 0)",
                          "one read word too few is counted: the last goes to the next owner")),
    Proof(
        name="arbiter_fair", component="MemoryArbiter(2), register_bus=False",
        prop=f"a waiting master's command is taken within {WAIT_BOUND} cycles (memory always "
             f"ready, masters move their data at once)",
        module=ARBITER, harness=partial(ArbiterHarness, what="fair"), mode="bmc",
        depth=WAIT_BOUND + 8,
        mutation=Mutation(ARBITER, "others_waiting.eq((req & ~(Const(1, n) << grant)[:n]) != 0)",
                          "others_waiting.eq(0)",
                          "the owner keeps queuing commands while another master waits")),
    Proof(
        name="link_no_overrun", component=f"HostLink(max_payload={MAX_PAYLOAD})",
        prop="any byte sequence: frame-buffer and result-buffer writes stay inside the buffers",
        module=FRAMING, harness=partial(LinkHarness, what="overrun"), mode="bmc", depth=22,
        mutation=Mutation(FRAMING,
                          "with m.If(full > Mux(face, self.face_payload, self.max_payload)):",
                          "with m.If(full > Mux(face, self.face_payload, self.max_payload + 2)):",
                          "a frame two bytes over the limit is taken into the buffer")),
    Proof(
        name="link_abandons_frames", component=f"HostLink(max_payload={MAX_PAYLOAD})",
        prop=f"any byte sequence, then a quiet line: within {RX_BOUND} cycles the parser "
             f"waits for no byte (cut and over-long frames are abandoned)",
        module=FRAMING, harness=partial(LinkHarness, what="rx"), mode="bmc", depth=24,
        mutation=Mutation(FRAMING, "with m.If(~i.valid & timed_out):",
                          "with m.If(~i.valid & timed_out & i.valid):",
                          "an over-long frame is discarded forever")),
]
