"""cocotb testbench of :class:`hw.engine.loader.Loader`: read words with random idle cycles,
``o_stream`` with random back-pressure.

The case (JSON, path in ``$CASE``, written by ``tests/test_hw_loader.py``) lists reads, each
``{"kind": int, "wrap": int, "words": [...], "to_out": 0/1}``. Per read the bench pulses
``clear``, sets ``kind``/``wrap``/``to_out``, sends the words on ``r`` and records every RAM
write, stream word and ``o_stream`` word the loader makes, the ``count`` and the ``desc``
registers after the read. It writes ``<case>.out.json``; the pytest side compares.
"""
from sim.bench import clock_and_reset, load_case, save_result

WRITE_PORTS = ("wram_w", "chan_w", "hdr_w", "lane_w", "buf_w", "lut_w")
STREAMS = ("rows", "res", "data")

try:
    import cocotb
    from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout

    from sim.streams import StreamSink, StreamSource

    @cocotb.test()
    async def loader_reads(dut):
        """Drive the reads of $CASE through the loader."""
        case = load_case()
        ports = [p for p in WRITE_PORTS if hasattr(dut, f"{p}__en")]
        src = StreamSource(dut, "r", dut.clk, idle_prob=0.3, seed=case["seed"])
        sink = StreamSink(dut, "o_stream", dut.clk, stall_prob=0.3, seed=case["seed"] + 1,
                          signed_bits=16)
        await clock_and_reset(dut, ("clear", "kind", "wrap", "to_out"))
        log = {"writes": [], "streams": []}

        async def monitor():
            while True:
                await ReadOnly()
                for p in ports:
                    en = int(getattr(dut, f"{p}__en").value)
                    if en:
                        log["writes"].append([p, int(getattr(dut, f"{p}__addr").value), en,
                                              int(getattr(dut, f"{p}__data").value)])
                for s in STREAMS:
                    if int(getattr(dut, f"{s}__valid").value):
                        log["streams"].append([s, int(getattr(dut, f"{s}__payload").value)])
                await RisingEdge(dut.clk)

        cocotb.start_soon(monitor())
        results = []
        for read in case["reads"]:
            await RisingEdge(dut.clk)
            dut.clear.value = 1
            dut.kind.value = read["kind"]
            dut.wrap.value = read["wrap"]
            dut.to_out.value = read["to_out"]
            await RisingEdge(dut.clk)
            dut.clear.value = 0
            await ClockCycles(dut.clk, 2)
            log["writes"], log["streams"] = [], []
            sent = cocotb.start_soon(src.send(read["words"]))
            out = []
            if read["to_out"]:
                out = await with_timeout(sink.receive(len(read["words"])), 100000, "ns")
            await with_timeout(sent, 100000, "ns")
            await src.assert_consumed(what="r")
            await ClockCycles(dut.clk, 3)
            await sink.assert_silent(cycles=8, what="o_stream")
            await ReadOnly()
            results.append({"writes": list(log["writes"]), "streams": list(log["streams"]),
                            "o_stream": out, "count": int(dut.count.value),
                            "desc": str(int(dut.desc.value))})
        save_result(results)
except ImportError:     # pragma: no cover - imported outside a simulator for the constants
    pass
