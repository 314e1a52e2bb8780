"""The sliced RAM: the word at an address two cycles later, whatever the slicing; writes by
granule reach only their slice's bits."""
import random

import pytest
from amaranth.sim import Simulator

from hw.engine.sliced_ram import SlicedRAM, slice_widths


def test_slice_widths():
    assert slice_widths(512, 16, 128) == [128] * 4
    assert slice_widths(256, 16, 96) == [96, 96, 64]
    assert slice_widths(8, 8, 128) == [8]


@pytest.mark.parametrize("width, slice_bits", [(250, 64), (256, 40), (256, 0)])
def test_bad_slicing_is_named(width, slice_bits):
    with pytest.raises(ValueError, match="multiples of the write granularity 16"):
        slice_widths(width, 16, slice_bits)


@pytest.mark.parametrize("slice_bits", [16, 48, 64])
def test_reads_two_cycles_late_and_writes_by_granule(slice_bits):
    width, depth, gran = 64, 16, 16
    dut = SlicedRAM(width=width, depth=depth, granularity=gran, slice_bits=slice_bits)
    assert len(dut.slices) == -(-width // slice_bits)
    rng = random.Random(slice_bits)
    model = [0] * depth
    checked = []

    async def bench(ctx):
        addrs, seen = [], []     # read addresses; the model's word at each, as the read sees it
        for _ in range(300):
            if addrs:
                # a read is registered at one edge and reads the RAM at the next, before that
                # edge's write: it sees the writes up to its own edge
                seen.append(model[addrs[-1]])
            if len(seen) >= 2:
                assert ctx.get(dut.r_data) == seen[-2], f"read {len(seen) - 2}"
                checked.append(seen[-2])
            write = rng.random() < 0.4
            addr, data, en = rng.randrange(depth), rng.getrandbits(width), rng.getrandbits(4)
            ctx.set(dut.w.addr, addr)
            ctx.set(dut.w.data, data)
            ctx.set(dut.w.en, en if write else 0)
            addrs.append(rng.randrange(depth))
            ctx.set(dut.r_addr, addrs[-1])
            await ctx.tick()
            if write:
                for g in range(width // gran):
                    if en >> g & 1:
                        mask = ((1 << gran) - 1) << (g * gran)
                        model[addr] = model[addr] & ~mask | data & mask

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) > 290 and len(set(checked)) > 8
