"""HostLink (hw/link/framing.py), the device side of the host link: frame parser, checker and
command executor, with any byte sequence from the host."""
from amaranth import Elaboratable, Module, Signal
from amaranth.hdl import Assert, Assume, ResetSignal

TIMEOUT = 3                  # inter-byte timeout, cycles
MAX_PAYLOAD = 10             # 4 + 6 data bytes: a 3-word frame buffer (not a power of two)
N_RESULT = 1
FACE_DEPTH = 5               # face buffer bytes
#: Quiet cycles after which the parser has left every state that waits for a byte.
RX_BOUND = TIMEOUT + 3
#: The states that wait for a byte from the host.
RX_STATES = ("SYNC1", "KIND", "SEQ", "LEN0", "LEN1", "PAYLOAD", "CRC0", "CRC1", "DISCARD")


class LinkHarness(Elaboratable):
    """Free bytes from the host and a free engine and memory.

    ``overrun``: a frame-buffer write lands inside the buffer and a result write inside the
    result buffer, whatever bytes arrive (over-long frames, lengths near the limit).
    ``rx``: once the line has been quiet for ``RX_BOUND`` cycles, the parser waits for no byte
    (a cut or over-long frame is abandoned), whatever came before.
    The environment of ``rx`` is cooperative (a host that takes every response byte, a memory
    that is always ready and answers reads at once, an engine that is never busy)."""

    def __init__(self, module, what):
        self.module, self.what = module, what
        self.dut = module.HostLink(timeout_cycles=TIMEOUT, max_payload=MAX_PAYLOAD,
                                   addr_width=4, max_burst=2, n_result=N_RESULT,
                                   face_depth=FACE_DEPTH)
        self.dut._MustUse__silence = True      # elaborated directly below, not as a submodule
        names = {"rx_valid": 1, "rx_byte": 8, "tx_ready": 1, "cmd_ready": 1, "w_ready": 1,
                 "r_valid": 1, "r_word": 16, "busy": 1, "done": 1, "error": 1,
                 "result_valid": 1, "result": 16, "face_ready": 1, "rx_errors": 2}
        self.free = {n: Signal(w, name=n) for n, w in names.items()}

    def ports(self):
        return list(self.free.values())

    def elaborate(self, platform):
        m = Module()
        dut, f = self.dut, self.free
        # Elaborate here, to reach the parser's state and its block RAMs' write ports.
        m.submodules.dut = dm = dut.elaborate(platform)
        fsm = dm._generated["fsm"]
        buf_w = dm.submodules.buf.write_ports[0]
        res_w = dm.submodules.results.write_ports[0]
        rx_run = self.what == "rx"
        m.d.comb += [
            Assume(~ResetSignal()),
            dut.i_stream.valid.eq(f["rx_valid"]), dut.i_stream.payload.eq(f["rx_byte"]),
            dut.rx_framing_error.eq(f["rx_errors"][0]), dut.rx_overrun.eq(f["rx_errors"][1]),
            dut.mem.r.payload.eq(f["r_word"]),
            dut.done.eq(f["done"]), dut.error.eq(f["error"]),
            dut.i_result.valid.eq(f["result_valid"]), dut.i_result.payload.eq(f["result"]),
        ]
        if rx_run:
            m.d.comb += [dut.o_stream.ready.eq(1), dut.mem.cmd.ready.eq(1), dut.mem.w.ready.eq(1),
                         dut.mem.r.valid.eq(1), dut.busy.eq(0), dut.o_face.ready.eq(1)]
            quiet = Signal(range(RX_BOUND + 1))
            with m.If(dut.i_stream.valid):
                m.d.sync += quiet.eq(0)
            with m.Elif(quiet < RX_BOUND):
                m.d.sync += quiet.eq(quiet + 1)
            for state in RX_STATES:
                m.d.comb += Assert((quiet < RX_BOUND) | (fsm.state != fsm.encoding[state]),
                                   f"the parser still waits in {state} on a quiet line")
        else:
            m.d.comb += [dut.o_stream.ready.eq(f["tx_ready"]),
                         dut.mem.cmd.ready.eq(f["cmd_ready"]), dut.mem.w.ready.eq(f["w_ready"]),
                         dut.mem.r.valid.eq(f["r_valid"]), dut.busy.eq(f["busy"]),
                         dut.o_face.ready.eq(f["face_ready"])]
            m.d.comb += [
                Assert(~buf_w.en | (buf_w.addr < dut.buf_words), "frame buffer overrun"),
                Assert(~res_w.en | (res_w.addr < 2 * N_RESULT), "result buffer overrun"),
            ]
        return m
