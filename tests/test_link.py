"""HostLink through its UART pins in cocotb (sim/tb_link.py), plus elaboration checks."""
import json

import pytest

from firmware import protocol as P
from hw.link.framing import HostLink, SerialHostLink
from hw.memory.port import MemoryPort
from sim.runner import run_cocotb

# Small enough to simulate quickly; odd memory size so that the address check is not a mask.
LINK_CFG = dict(divider=8, timeout_cycles=2000, max_payload=4 + 2 * 64, addr_width=12,
                mem_words=3000, max_burst=16, n_result=32,
                # two 90-byte faces fit the face buffer, a third does not
                face_depth=200,
                # driver test: image and face placement
                load_addr=64, image_bytes=600, input_addr=1500, face_shape=[6, 5, 3],
                # simulated seconds (sim/host_clock.py): 100,000 cycles, about nine of the
                # longest frames
                input_words=45, host_timeout=1e-3)
LINK_TESTS = ["write_read_round_trip", "recovery_from_bad_input", "exact_counters",
              "run_and_result", "face_stream", "face_buffer_full_and_long_frames",
              "results_queue_and_resend"]


def link_harness():
    c = LINK_CFG
    return SerialHostLink(c["divider"], timeout_cycles=c["timeout_cycles"],
                          max_payload=c["max_payload"], addr_width=c["addr_width"],
                          mem_words=c["mem_words"], max_burst=c["max_burst"],
                          n_result=c["n_result"], face_depth=c["face_depth"])


def run_link_tests(testcase):
    run_cocotb(link_harness(), name="link_d8", test_module="sim.tb_link", testcase=testcase,
               extra_env={"LINK_CFG": json.dumps(LINK_CFG)})


def test_link_cocotb():
    run_link_tests(LINK_TESTS + ["drain_checks_bite"])


@pytest.mark.parametrize("fault, message", [
    ("extra_read_word", r"DrainError: mem__r \(read words the link did not take\): 1 of \d+ "
                        r"input words not consumed"),
    ("short_face", r"DrainError: o_face: a face byte beyond the last face \(1 whole face\(s\)\)"),
    ("unread_response", r"DrainError: tx: [1-9]\d* byte\(s\) after the last response"),
    ("unwritten_read", r"AssertionError: memory model: read of word 11 never written"),
])
def test_link_bench_drain_checks_bite(fault, message):
    """Each drain check of the link bench fails when its stream does not end where it should:
    a read word the link never takes, a face byte beyond the engine's face, a response nobody
    read; and its memory model fails on a read of a word never written (the same session
    passes without a fault, in test_link_cocotb)."""
    import re
    from sim.runner import SIM_BUILD
    with pytest.raises((AssertionError, SystemExit)):    # (the cocotb runner exits)
        run_cocotb(link_harness(), name="link_d8", test_module="sim.tb_link",
                   testcase="drain_checks_bite",
                   extra_env={"LINK_CFG": json.dumps(LINK_CFG), "LINK_FAULT": fault})
    log = (SIM_BUILD / "link_d8" / "run.log").read_text()
    assert re.search(message, log), log[-3000:]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs, message", [
    (dict(timeout_cycles=1), "timeout_cycles"),
    (dict(timeout_cycles=100, max_payload=7), "max_payload"),
    (dict(timeout_cycles=100, max_burst=12), "max_burst"),
    (dict(timeout_cycles=100, addr_width=8, mem_words=300), "mem_words"),
    (dict(timeout_cycles=100, n_result=0), "n_result"),
    (dict(timeout_cycles=100, face_depth=1), "face_depth"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HostLink(**kwargs)


def test_face_buffer_refuses_lanes_that_do_not_divide_its_depth():
    from hw.link.face_buffer import FaceBuffer
    with pytest.raises(ValueError, match="lanes must divide depth 57"):
        FaceBuffer(57, 2)
    assert FaceBuffer(19 * 2048).lanes == 19 and FaceBuffer(2048).lanes == 1


def test_signature_for_integrator():
    link = HostLink(timeout_cycles=100)
    link._MustUse__silence = True
    names = set(link.signature.members)
    assert names == {"i_stream", "o_stream", "rx_framing_error", "rx_overrun", "mem", "start",
                     "busy", "done", "error", "i_result", "o_face"}
    assert link.buf_words == (P.MAX_PAYLOAD - 4) // 2 == 1024
    assert link.signature.members["mem"].signature == MemoryPort(24)
    layout = link.mem.cmd.payload.shape()
    assert [(name, field.width) for name, field in layout] == [("addr", 24), ("write", 1),
                                                               ("length", 13)]


@pytest.mark.parametrize("depth, lanes, seed", [(64, 1, 1), (37, 1, 2), (57, 3, 3)])
def test_face_buffer_cocotb(depth, lanes, seed):
    """The face buffer alone: commit, rollback, overflow, random stalls and back-pressure
    (sim/tb_face_buffer.py); a depth that is not a power of two wraps its pointers too, and
    57 bytes in 3 byte lanes of 19 rows wrap lane and row (the 85F's buffer: 19 lanes of
    2048 rows)."""
    from hw.link.face_buffer import FaceBuffer
    run_cocotb(FaceBuffer(depth, lanes), name=f"face_buffer_{depth}_{lanes}",
               test_module="sim.tb_face_buffer",
               extra_env={"FACE_BUFFER_CFG": json.dumps({"depth": depth, "seed": seed,
                                                         "frames": 40})})
