"""Model of the USB full-speed link's throughput, and of faces/s end to end with the engine.

    python -m hw.link.usb_model --json reports/usb_link.json --md reports/usb_link.md

The bulk ceiling is USB 2.0's (table 5-9): at full speed a 1 ms frame holds at most 19 bulk
transactions of 64 bytes, 1,216,000 bytes/s, each transaction a token, a data packet and a
handshake with their SYNC, PID, CRC, EOP and turnarounds. The host link's protocol
(:mod:`firmware.protocol`) adds 8 bytes a frame and is stop-and-wait: each command waits for
its response, which a host controller returns at the earliest in the next scheduling pass;
the model charges ``turnaround_ms`` (default one 1 ms USB frame) a command. A face of
``H x W x C`` bytes goes as one FACE_DATA frame into the link's face buffer (STATUS
``face_payload``: the buffer's size + 4 on the 85F, :data:`hw.board.top.FACE_BUFFER_BYTES`),
then READ_RESULT returns ``N_RESULT`` 16-bit words.

The engine's time per face comes from the build report of the board each link is on
(``reports/board_ulx3s-usb.json`` for USB, ``reports/board_ulx3s.json`` for the UART: cycles
per frame at the clock the build met, the two boards' engine clocks differ). With upload and
compute overlapped the slower of the two bounds the rate; without, their sum does.
"""
import json
import math
from pathlib import Path

from firmware import protocol as P
from hw.board.top import FACE_BUFFER_BYTES
from quant import cli
from quant.files import project_relative

ROOT = Path(__file__).resolve().parents[2]

USB_FS_BIT_RATE = 12e6
#: USB 2.0 table 5-9: full-speed bulk, 64-byte packets, at most 19 transactions a 1 ms frame.
BULK_TRANSACTIONS_PER_FRAME = 19
BULK_PACKET = 64
FRAME_S = 1e-3
FACE_SHAPE = (112, 112, 3)
UART_BAUD = 3_000_000
UART_BITS_PER_BYTE = 10
#: The longest FACE_DATA payload: offset + a whole face buffer.
FACE_PAYLOAD = FACE_BUFFER_BYTES + 4


def bulk_ceiling_bytes_per_s() -> float:
    return BULK_TRANSACTIONS_PER_FRAME * BULK_PACKET / FRAME_S


def face_frames(face_bytes=math.prod(FACE_SHAPE), max_payload=FACE_PAYLOAD):
    """Sizes of the FACE_DATA payloads a face travels in."""
    chunk = max_payload - 4
    return [4 + min(chunk, face_bytes - off) for off in range(0, face_bytes, chunk)]


def link_face_time(bytes_per_s, turnaround_s, face_bytes=math.prod(FACE_SHAPE),
                   n_result=P.N_RESULT, max_payload=FACE_PAYLOAD, pipelined=False) -> dict:
    """Seconds to upload one face and read its embedding back over a link of ``bytes_per_s``
    (each direction), stop-and-wait (``turnaround_s`` a command) or ``pipelined`` (frames
    back to back, responses overlapped)."""
    frames = face_frames(face_bytes, max_payload)
    up = sum(p + P.OVERHEAD for p in frames) + P.OVERHEAD        # + READ_RESULT
    down = len(frames) * P.OVERHEAD + 2 * n_result + P.OVERHEAD   # ACKs + the embedding
    commands = len(frames) + 1
    wire = up / bytes_per_s
    if not pipelined:
        wire += down / bytes_per_s + commands * turnaround_s
    else:
        wire += (2 * n_result + P.OVERHEAD) / bytes_per_s + turnaround_s
    return {"frames": commands, "bytes_up": up, "bytes_down": down, "seconds": wire}


#: The board of boards.yaml each link is built for.
LINK_BOARDS = {"usb_full_speed": "ulx3s-usb", "uart_3mbaud": "ulx3s"}


def board_report(board, reports=ROOT / "reports") -> Path:
    return Path(reports) / f"board_{board}.json"


def engine_seconds(report: Path) -> dict:
    r = json.loads(Path(report).read_text())
    return {"board": r["board"], "cycles_per_frame": r["cycles_per_frame"],
            "clock_mhz": r["achieved_clock_mhz"],
            "seconds": r["cycles_per_frame"] / (r["achieved_clock_mhz"] * 1e6),
            "source": project_relative(report)}


def model(turnaround_ms=1.0, reports=ROOT / "reports") -> dict:
    links = {
        "usb_full_speed": {"bytes_per_s": bulk_ceiling_bytes_per_s(),
                           "turnaround_s": turnaround_ms / 1e3,
                           "basis": "USB 2.0 table 5-9: 19 x 64-byte bulk transactions a 1 ms "
                                    "frame; turnaround one USB frame a command"},
        "uart_3mbaud": {"bytes_per_s": UART_BAUD / UART_BITS_PER_BYTE, "turnaround_s": 0.0,
                        "basis": "8N1 at 3 Mbaud, 10 bits a byte; the response follows on the "
                                 "other wire"},
    }
    out = {"face_bytes": math.prod(FACE_SHAPE), "links": {}}
    for name, link in links.items():
        eng = engine_seconds(board_report(LINK_BOARDS[name], reports))
        t_eng = eng["seconds"]
        rows = {"engine": eng}
        for mode in ("stop_and_wait", "pipelined"):
            t = link_face_time(link["bytes_per_s"], link["turnaround_s"],
                               pipelined=mode == "pipelined")
            t_link = t["seconds"]
            rows[mode] = {**t, "link_faces_per_s": 1 / t_link,
                          "sequential_faces_per_s": 1 / (t_link + t_eng),
                          "overlapped_faces_per_s": 1 / max(t_link, t_eng),
                          "bound_by": "engine" if t_eng >= t_link else "link"}
        out["links"][name] = {**link, **rows}
    usb = out["links"]["usb_full_speed"]
    out["note"] = ("over USB, faces/s end to end is bounded by the engine (%.1f ms a face at "
                   "%g MHz on %s): with the upload overlapped, %.1f faces/s, the engine's own "
                   "rate. 20 faces/s needs an engine under 50 ms a face: "
                   "the USB link alone carries %.1f faces/s stop-and-wait "
                   "(%g ms turnaround a command), %.1f pipelined"
                   % (usb["engine"]["seconds"] * 1e3, usb["engine"]["clock_mhz"],
                      usb["engine"]["board"], usb["stop_and_wait"]["overlapped_faces_per_s"],
                      usb["stop_and_wait"]["link_faces_per_s"], turnaround_ms,
                      usb["pipelined"]["link_faces_per_s"]))
    return out


def markdown(m) -> str:
    engines = [f"on {e['board']} {e['seconds'] * 1e3:.1f} ms a face ({e['cycles_per_frame']} "
               f"cycles at {e['clock_mhz']:g} MHz, {e['source']})"
               for e in (link["engine"] for link in m["links"].values())]
    lines = ["# Host link model: faces/s end to end", "",
             f"Face {m['face_bytes']} bytes; the engine {'; '.join(engines)}. "
             f"Model: `python -m hw.link.usb_model`.", "",
             "| link | board | mode | link ms/face | link faces/s | sequential faces/s | "
             "overlapped faces/s | bound by |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for name, link in m["links"].items():
        for mode in ("stop_and_wait", "pipelined"):
            r = link[mode]
            lines.append(f"| {name} | {link['engine']['board']} | {mode} | "
                         f"{r['seconds'] * 1e3:.1f} | "
                         f"{r['link_faces_per_s']:.1f} | {r['sequential_faces_per_s']:.1f} | "
                         f"{r['overlapped_faces_per_s']:.1f} | {r['bound_by']} |")
    lines += ["", m["note"] + ".", ""]
    return "\n".join(lines)


def _main(argv):
    parser = cli.ArgumentParser(prog="python -m hw.link.usb_model",
                                description="USB full-speed / UART link model: faces/s")
    parser.add_argument("--turnaround-ms", type=float, default=1.0,
                        help="host turnaround a stop-and-wait command (default 1 ms)")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports",
                        help="folder of the boards' build reports board_<board>.json "
                             "(default reports/)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--md", type=Path, default=None)
    args = parser.parse_args(argv)
    for board in LINK_BOARDS.values():
        if not board_report(board, args.reports).is_file():
            raise cli.UserError(f"--reports {args.reports}",
                                f"no build report {board_report(board, args.reports).name} "
                                f"(python -m hw.build --board {board} writes it)")
    if args.turnaround_ms < 0:
        raise cli.UserError(f"--turnaround-ms {args.turnaround_ms}", "must be >= 0")
    m = model(args.turnaround_ms, args.reports)
    if args.json:
        args.json.write_text(json.dumps(m, indent=2) + "\n")
    if args.md:
        args.md.write_text(markdown(m))
    print(markdown(m))
    return 0


def main(argv=None):
    return cli.run(_main, argv, prog="python -m hw.link.usb_model")


if __name__ == "__main__":
    raise SystemExit(main())
