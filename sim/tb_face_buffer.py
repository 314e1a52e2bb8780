"""cocotb test of :class:`hw.link.face_buffer.FaceBuffer`: frames of random length written with
random gaps, each committed or rolled back (a frame that found the buffer full always rolled
back, as the link does), read with random back-pressure and long pauses that fill the buffer.

The reader must see exactly the committed frames' bytes, in order, and no byte before its frame
was committed (a rolled-back byte would show as wrong data); ``level`` ends at 0.
"""
import json
import os
import random

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from sim.streams import StreamSink
from sim.tb_uart import start_bench

CFG = json.loads(os.environ.get("FACE_BUFFER_CFG", "{}"))


@cocotb.test()
async def commit_rollback_under_stalls(dut):
    depth, seed = CFG["depth"], CFG["seed"]
    rng = random.Random(seed)
    dut.w_en.value = dut.commit.value = dut.rollback.value = 0
    await start_bench(dut)
    sink = StreamSink(dut, "o_stream", dut.clk, stall_prob=0.5, seed=seed + 1)
    committed = bytearray()     # what the reader may see, in order
    got = bytearray()
    stats = {"frames": 0, "rolled_back": 0, "overflowed": 0}

    async def reader():
        while True:
            if rng.random() < 0.2:                      # a long pause: the buffer fills
                await ClockCycles(dut.clk, rng.randrange(depth, 3 * depth))
            ahead = len(committed) - len(got)      # never wait for bytes that are not there
            if not ahead:
                await RisingEdge(dut.clk)
                continue
            chunk = await sink.receive(min(ahead, rng.randrange(1, 20)))
            got.extend(chunk)
            assert len(got) <= len(committed), \
                f"the reader got {len(got)} bytes, only {len(committed)} were committed"
            assert got == committed[:len(got)], f"byte {len(got)}: order or data differ"

    cocotb.start_soon(reader())
    for _ in range(CFG["frames"]):
        n = rng.randrange(1, depth + depth // 2)
        data = bytes(rng.randrange(256) for _ in range(n))
        over = False
        for b in data:
            while rng.random() < 0.3:
                dut.w_en.value = 0
                await RisingEdge(dut.clk)
            dut.w_en.value, dut.w_data.value = 1, b
            await ReadOnly()
            over |= bool(int(dut.w_full.value))
            await RisingEdge(dut.clk)
        dut.w_en.value = 0
        await ClockCycles(dut.clk, rng.randrange(0, 4))
        keep = not over and rng.random() < 0.7
        stats["frames"] += 1
        stats["overflowed"] += over
        stats["rolled_back"] += not keep
        (dut.commit if keep else dut.rollback).value = 1
        await RisingEdge(dut.clk)
        dut.commit.value = dut.rollback.value = 0
        if keep:
            committed.extend(data)
    for _ in range(200 * depth):
        if len(got) == len(committed):
            break
        await ClockCycles(dut.clk, 10)
    assert got == committed, f"read {len(got)} of {len(committed)} committed bytes"
    await sink.assert_silent(64, "face buffer output")
    assert int(dut.level.value) == 0 and not int(dut.w_full.value)
    assert stats["overflowed"] and stats["rolled_back"] > stats["overflowed"], stats
    assert len(committed) > 4 * depth, stats
    dut._log.info("%s, %d bytes through", stats, len(committed))
