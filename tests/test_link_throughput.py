"""The link throughput report's arithmetic (sim/link_throughput.py): the model and the
analysis of a board-simulation result. The simulation itself is ``python -m
sim.link_throughput`` (reports/link_throughput.json, checked against the README by
tests/test_figures.py)."""
import pytest

from firmware import protocol as P
from sim.link_throughput import FACE_BYTES, analyse, markdown, model, wire_bytes


def test_wire_bytes_of_a_pipelined_face():
    up, down, transactions = wire_bytes()
    # one FACE_DATA frame (offset + face) and a READ_RESULT; their ACKs, one with the embedding
    assert up == FACE_BYTES + 4 + 2 * P.OVERHEAD and down == 2 * P.OVERHEAD + 2 * P.N_RESULT
    assert transactions == 2
    up2, _, transactions2 = wire_bytes(face_payload=P.MAX_PAYLOAD)   # 2048-byte chunks
    assert transactions2 == 20 and up2 == FACE_BYTES + 19 * 12 + P.OVERHEAD


def test_model_at_3_mbaud():
    m = model(3e6, 0.093, 0.0)
    assert m["bound"] == "link" and m["link_ms"] == pytest.approx(38692 * 10 / 3e6 * 1e3)
    assert 7.5 < m["faces_per_s_overlapped"] < 3e6 / 10 / FACE_BYTES       # under the wire cap
    assert m["faces_per_s_serial"] == pytest.approx(1 / (m["link_ms"] / 1e3 + 0.093))
    assert model(3e6, 0.093, 1e-3)["faces_per_s_overlapped"] > 7.5
    assert model(3e6, 0.2, 0.0)["bound"] == "engine"


def test_analyse_a_result():
    ack, rr = P.ACK_FLAG | P.Cmd.FACE_DATA, P.ACK_FLAG | P.Cmd.READ_RESULT
    res = {"embeddings": [[0], [0]],
           "host_frames": [[P.Cmd.FACE_DATA, 1, 0, 100], [P.Cmd.FACE_DATA, 2, 120, 220],
                           [P.Cmd.READ_RESULT, 3, 230, 231], [P.Cmd.READ_RESULT, 4, 262, 263]],
           "device_frames": [[ack, 1, 110], [ack, 2, 228], [rr, 3, 260], [rr, 4, 330]],
           "run_intervals": [[105, 180], [225, 300]], "sdram": {}, "wall_seconds": 1.0}
    m = analyse(res, clk_hz=1000.0, divider=4)
    assert (m["period_cycles"], m["latency_alone_cycles"], m["overlap_cycles"]) == (140, 210, 60)
    assert m["faces_per_s"] == pytest.approx(1000 / 140) and m["compute_cycles"] == [75, 75]
    assert m["host_turnaround_cycles_median"] == 2          # of 120 - 110, 230 - 228, 262 - 260
    rep = {"board": "b", "clock_mhz": 0.001, "variant": "v", "source": "s",
           "measured": {**m, "period_ms_at_3mbaud": 140.0, "faces_per_s_at_3mbaud": 7.14,
                        "bit_exact": True},
           "model": [model(3e6, 0.093, 0.0)], "model_unbuffered": model(3e6, 0.093, 1e-3)}
    assert "7.14 faces/s" in markdown(rep)
