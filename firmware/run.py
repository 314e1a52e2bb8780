"""Faces through the accelerator: ``python -m firmware.run COMMAND ...``.

    python -m firmware.run verify a.jpg b.jpg [--threshold T]   same person or not
    python -m firmware.run enroll NAME photo.jpg [more.jpg ...]  add to the gallery
    python -m firmware.run identify photo.jpg [--name NAME]      who is it (of the gallery)
    python -m firmware.run remove NAME | list                    gallery upkeep
    python -m firmware.run embed face.jpg [...]                  embeddings and all cosines
                                                                 (also without a command)

Where the network runs (one of):

* ``--port /dev/ttyUSB0`` (a ULX3S over its USB-UART; ``--image build/ulx3s/memory.bin``
  uploads the memory image first: its header says where it goes and where the face is, or
  ``--load-addr`` / ``--input-addr`` for an image without one);
* ``--sim``: the whole board design (``--board``, default ulx3s) in Verilator, driven by the
  same host driver over its UART pins, with the program preloaded into the simulated SDRAM:
  for users without a board (a few minutes a face);
* ``--golden``: the bit-exact integer golden model on the CPU (the embeddings are the ones the
  board returns; a fraction of a second a face).

Every photo goes through :func:`quant.align.prepare`: the largest face is detected and aligned
to the 112x112 template (``--every-face``: all of them for ``identify`` and ``embed``);
112x112 images pass unchanged, ``--aligned`` forces that. What was detected is printed;
``--show out.png`` draws it. The same/different threshold ships with the artifact: the float
model's equal-error threshold on the quantizer report's pairs (``report.json`` of
``--artifact``); ``--threshold`` overrides it. The gallery (``--gallery``, default
``gallery.json``) is described in :mod:`firmware.gallery`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

COMMANDS = ("verify", "enroll", "identify", "remove", "list", "embed")
DEFAULT_ARTIFACT = Path("build/quant/seesaw_shuffle")


from quant import cli
from quant.cli import UserError


# ----------------------------------------------------------------------------------------------
# Faces

def prepare_faces(paths, *, aligned=False, every_face=False, show=None, log=print):
    """Photos -> (list of (label, 112x112x3 face), list of Prepared); prints what was done."""
    from quant.align import draw, prepare
    from quant.faces import read_image
    faces, prepared, images = [], [], []
    for path in paths:
        img = read_image(path)
        ps = prepare(img, str(path), aligned=aligned, every_face=every_face)
        for i, p in enumerate(ps):
            log(p.describe() if i == 0 else f"  and face {p.index + 1}")
            label = str(path) if len(ps) == 1 else f"{path}#{p.index + 1}"
            faces.append((label, p.face))
        prepared += ps
        images.append(img)
    if show:
        log(f"wrote {draw(prepared, images, show)} (detections and aligned crops)")
    return faces, prepared


# ----------------------------------------------------------------------------------------------
# Where the network runs

def artifact_id(folder: Path) -> str | None:
    """sha256 of the artifact's model.npz (ties gallery embeddings to their model)."""
    f = Path(folder) / "model.npz"
    return hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else None


def shipped_threshold(folder: Path) -> float:
    """The float model's equal-error threshold from the artifact's quantizer report."""
    rep = Path(folder) / "report.json"
    try:
        return float(json.loads(rep.read_text())["decisions"]["float_eer_threshold"])
    except FileNotFoundError:
        raise UserError(f"{rep}: no quantizer report, so no shipped threshold; run `make "
                        f"quantize` or pass --threshold") from None
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{rep}: no decisions.float_eer_threshold ({e}); run `make quantize` "
                        f"without --no-pairs or pass --threshold") from None


def _stream_order(artifact, emb):
    """Golden embeddings in the order the engine streams them (HWC of a C x H x W output)."""
    c = artifact.tensors[artifact.program[-1]["output"]]["shape"][0]
    return emb.reshape(len(emb), c, -1).transpose(0, 2, 1).reshape(len(emb), -1)


class Golden:
    """The bit-exact integer golden model of the artifact, on the CPU."""

    def __init__(self, args, log=print):
        from quant.artifact import load
        from quant.golden import GoldenModel
        self.folder = _artifact(args, log)
        self.artifact = load(self.folder)
        self.model = GoldenModel(self.artifact)
        self.log = log

    def embed(self, faces):
        t = time.monotonic()
        emb = _stream_order(self.artifact, self.model.run(np.stack(faces)).embedding)
        self.log(f"golden model: {len(faces)} face(s) in {time.monotonic() - t:.2f} s")
        return emb.astype(np.int64)

    def close(self):
        pass


class Simulated(Golden):
    """The whole board design in Verilator (:func:`sim.board_sim.simulate`)."""

    def __init__(self, args, log=print):
        super().__init__(args, log)
        from firmware.compiler import compile_artifact
        from firmware.image import EngineConfig
        from hw.board.boards import get_board
        self.board = args.board
        self.compiled = compile_artifact(self.artifact, EngineConfig.from_board(get_board(
            args.board)))

    def embed(self, faces):
        from sim.board_sim import simulate
        self.log(f"simulating the {self.board} board design in Verilator (build about 1 min "
                 f"the first time), then {len(faces)} face(s), each 112x112x3 bytes over the "
                 f"UART pins and a whole frame (about 4-5 min a face on 2 cores) ...",
                 flush=True)
        t = time.monotonic()
        res = simulate(self.board, self.compiled, np.stack(faces), ["stream"] * len(faces),
                       preload=True, pipelined=True)
        for what in ("error", "drain_error"):
            if res[what]:
                raise cli.RunFailed(f"simulated board: {res[what]}")
        self.log(f"simulated board: {len(faces)} face(s) in {time.monotonic() - t:.0f} s, "
                 f"{int(sum(res['run_cycles'])):,} cycles running")
        return np.array(res["embeddings"], dtype=np.int64)


class Board:
    """A ULX3S over the serial port (:class:`firmware.driver.Device`)."""

    def __init__(self, args, log=print):
        from .driver import Device, ImageHeader
        from .transport import SerialTransport
        self.log = log
        self.folder = args.artifact
        image = header = None
        if args.image is not None:
            if not args.image.exists():
                raise UserError(f"{args.image}: memory image does not exist")
            image = args.image.read_bytes()
            try:
                header = ImageHeader.parse(image)
            except ValueError as e:
                raise UserError(f"{args.image}: {e}") from None
        if args.face_via == "memory" and args.input_addr is None and header is None:
            raise UserError("--face-via memory needs --input-addr or an --image with a header")
        self.shape = header.input_shape if header else (*(args.input_size or (112, 112)), 3)
        self.transport = SerialTransport(args.port, args.baud)
        self.dev = Device(self.transport, timeout=args.timeout, retries=args.retries,
                          input_addr=args.input_addr, face_via=args.face_via)
        st = self.dev.status()
        log(f"device on {args.port}: protocol v{st.version}, max payload {st.max_payload} "
            f"bytes, {st.n_result} results, busy={st.busy}")
        if image is not None:
            log(f"uploading {args.image} ({len(image)} bytes) ...", flush=True)
            t = time.monotonic()
            self.dev.load_image(image, load_addr=args.load_addr, verify=args.verify_upload)
            dt = time.monotonic() - t
            log(f"uploaded in {dt:.2f} s ({len(image) / max(dt, 1e-9) / 1e3:.1f} kB/s)")
        if args.input_addr is not None:
            self.dev.input_addr = args.input_addr
        self.run_timeout = args.run_timeout

    def embed(self, faces):
        """Pipelined (Device.run_faces): face N+1 uploads while the board computes face N."""
        for face in faces:
            if face.shape != tuple(self.shape):
                raise UserError(f"the memory image expects {self.shape} faces, the aligned "
                                f"face is {face.shape}")
        t0 = last = time.monotonic()

        def done(k, _):
            nonlocal last
            now = time.monotonic()
            self.log(f"board: face {k + 1} of {len(faces)} back after {now - last:.3f} s")
            last = now

        out = self.dev.run_faces(faces, timeout=self.run_timeout, on_result=done)
        dt = time.monotonic() - t0
        if len(faces) > 1:
            self.log(f"board: {len(faces)} faces in {dt:.3f} s ({len(faces) / dt:.2f} faces/s "
                     f"end to end)")
        return np.array(out, dtype=np.int64)

    def close(self):
        st = self.dev.status()
        if st.bad_frames or st.framing_errors:
            self.log(f"link: {st.bad_crc} bad CRC, {st.bad_length} bad length, {st.timeouts} "
                     f"cut frames, {st.framing_errors} framing errors, "
                     f"{self.dev.stats['resends']} resends")
        self.transport.close()


def _artifact(args, log):
    """The artifact folder; quantized first (``python -m quant``) if it is the default and
    missing, as on a fresh clone."""
    folder = args.artifact
    if (folder / "manifest.json").exists():
        return folder
    if folder != DEFAULT_ARTIFACT and folder.resolve() != DEFAULT_ARTIFACT.resolve():
        raise UserError(f"{folder}: no quantized artifact (manifest.json missing)")
    from hw.board.boards import get_board
    from sim.run_sim import _artifact as quantize
    log(f"{folder} is missing: quantizing seesaw_shuffle first (a few minutes) ...", flush=True)
    return quantize(get_board("ulx3s"), "seesaw_shuffle", None,
                    log=lambda t: log(f"    {t}", flush=True))


def open_backend(args, log=print):
    if args.sim:
        return Simulated(args, log)
    if args.golden:
        return Golden(args, log)
    return Board(args, log)


# ----------------------------------------------------------------------------------------------
# Commands

def cmd_verify(args, log):
    faces, _ = prepare_faces([args.a, args.b], aligned=args.aligned, show=args.show, log=log)
    backend = open_backend(args, log)            # quantizes the default artifact if missing
    try:
        thr = args.threshold if args.threshold is not None else shipped_threshold(args.artifact)
        emb = backend.embed([f for _, f in faces])
    finally:
        backend.close()
    from .driver import cosine
    c = cosine(emb[0], emb[1])
    src = "given" if args.threshold is not None else "the artifact's float equal-error threshold"
    log(f"cosine {c:+.4f}: {'SAME person' if c > thr else 'DIFFERENT people'} "
        f"(threshold {thr:.4f}, {src})")
    return 0


def _gallery(args, must_exist):
    from .gallery import Gallery
    return Gallery.open(args.gallery, must_exist=must_exist)


def cmd_enroll(args, log):
    gallery = _gallery(args, must_exist=False)     # a corrupt gallery stops us here
    faces, _ = prepare_faces(args.images, aligned=args.aligned, show=args.show, log=log)
    backend = open_backend(args, log)
    try:
        emb = backend.embed([f for _, f in faces])
    finally:
        backend.close()
    gallery.enroll(args.name, emb, artifact_id(args.artifact))
    gallery.save()
    log(f"enrolled {args.name!r}: {len(emb)} new embedding(s), "
        f"{len(gallery.people[args.name])} in all; {len(gallery.people)} people in "
        f"{gallery.path}")
    return 0


def cmd_identify(args, log):
    gallery = _gallery(args, must_exist=True)
    names = [args.name] if args.name else None
    if names:
        gallery.person(args.name)               # unknown name: an error before any work
    if not gallery.people:
        raise UserError(f"{gallery.path}: nobody is enrolled")
    gallery.check_artifact(artifact_id(args.artifact))
    faces, _ = prepare_faces([args.image], aligned=args.aligned, every_face=args.every_face,
                             show=args.show, log=log)
    backend = open_backend(args, log)
    try:
        thr = args.threshold if args.threshold is not None else shipped_threshold(args.artifact)
        emb = backend.embed([f for _, f in faces])
    finally:
        backend.close()
    for (label, _), e in zip(faces, emb):
        scores = gallery.scores(e, names)
        best, c = scores[0]
        verdict = f"{best!r}" if c > thr else "nobody enrolled" + (
            f" (closest {best!r})" if not args.name else "")
        if args.name:
            verdict = f"{'IS' if c > thr else 'is NOT'} {best!r}"
        log(f"{label}: {verdict}, cosine {c:+.4f} (threshold {thr:.4f})")
        for n, s in scores[1:4]:
            log(f"    {n}: {s:+.4f}")
    return 0


def cmd_remove(args, log):
    gallery = _gallery(args, must_exist=True)
    gallery.remove(args.name)
    gallery.save()
    log(f"removed {args.name!r}; {len(gallery.people)} people left in {gallery.path}")
    return 0


def cmd_list(args, log):
    gallery = _gallery(args, must_exist=True)
    for name, embs in sorted(gallery.people.items()):
        log(f"{name}: {len(embs)} embedding(s)")
    log(f"{len(gallery.people)} people in {gallery.path}")
    return 0


def cmd_embed(args, log):
    faces, _ = prepare_faces(args.faces, aligned=args.aligned, every_face=args.every_face,
                             show=args.show, log=log)
    backend = open_backend(args, log)
    try:
        emb = backend.embed([f for _, f in faces])
    finally:
        backend.close()
    from .driver import cosine
    for (label, _), e in zip(faces, emb):
        head = " ".join(str(int(v)) for v in e[:args.values])
        log(f"{label}: [{head} ...] ({len(e)} values)")
    if len(emb) > 1:
        log("cosine similarity:")
        for i in range(len(emb)):
            for j in range(i + 1, len(emb)):
                log(f"  {faces[i][0]} vs {faces[j][0]}: {cosine(emb[i], emb[j]):+.4f}")
    return 0


# ----------------------------------------------------------------------------------------------
# Command line

def _where(p):
    g = p.add_argument_group("where the network runs (one of --port, --sim, --golden)")
    m = g.add_mutually_exclusive_group(required=True)
    m.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB0, or usb: the US2 "
                   "CDC-ACM port of a ulx3s-usb build, found by VID:PID")
    m.add_argument("--sim", action="store_true",
                   help="the whole board design in Verilator (no board needed; minutes a face)")
    m.add_argument("--golden", action="store_true",
                   help="the bit-exact integer golden model on the CPU")
    g.add_argument("--board", default="ulx3s", help="--sim: board of boards.yaml "
                                                    "(default: %(default)s)")
    g.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT,
                   help="quantized artifact: the model of --sim/--golden, its report's "
                        "threshold, the gallery's model check (default: %(default)s; "
                        "quantized if missing)")
    g.add_argument("--baud", type=cli.count, default=3_000_000, help="UART baud rate (default "
                                                              "3000000)")
    g.add_argument("--image", type=Path, help="--port: memory image to upload first, e.g. "
                                              "build/ulx3s/memory.bin")
    g.add_argument("--load-addr", type=lambda s: int(s, 0), default=0,
                   help="word address for an image without header (default 0)")
    g.add_argument("--input-addr", type=lambda s: int(s, 0),
                   help="word address of the face input (overrides the image header)")
    g.add_argument("--input-size", type=cli.count, nargs=2, metavar=("H", "W"),
                   help="face size when the image has no header (default 112 112)")
    g.add_argument("--face-via", choices=("stream", "memory"), default="stream",
                   help="FACE_DATA to the engine's input stream (default), or WRITE_MEM at "
                        "--input-addr and RUN (the shipped engine refuses RUN)")
    g.add_argument("--verify-upload", action="store_true",
                   help="read the uploaded memory image back and compare")
    g.add_argument("--timeout", type=cli.positive_float, default=1.0, help="seconds per response "
                                                              "(default 1)")
    g.add_argument("--retries", type=cli.non_negative, default=3, help="resends per frame (default 3)")
    g.add_argument("--run-timeout", type=cli.positive_float, default=10.0,
                   help="seconds to wait for one face on the board (default 10)")


def _photos(p, every=False):
    p.add_argument("--aligned", action="store_true",
                   help="the images are aligned face crops: resize to 112x112, no detection")
    if every:
        p.add_argument("--every-face", action="store_true",
                       help="every detected face, not only the largest")
    p.add_argument("--show", type=Path, metavar="PNG",
                   help="draw the detections and the aligned crops into this picture")


def _gallery_opt(p):
    p.add_argument("--gallery", type=Path, default=Path("gallery.json"),
                   help="gallery file (default: %(default)s)")


def _threshold(p):
    p.add_argument("--threshold", type=float,
                   help="cosine above which two faces are the same person (default: the "
                        "artifact's float equal-error threshold)")


def parser():
    ap = cli.ArgumentParser(prog="python -m firmware.run", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("verify", help="are two photos the same person?")
    p.add_argument("a", type=Path, help="first photo")
    p.add_argument("b", type=Path, help="second photo")
    _threshold(p), _photos(p), _where(p)
    p = sub.add_parser("enroll", help="add a person's photos to the gallery")
    p.add_argument("name", help="the person's name")
    p.add_argument("images", nargs="+", type=Path, help="photos of the person (largest face "
                                                        "of each)")
    _gallery_opt(p), _photos(p), _where(p)
    p = sub.add_parser("identify", help="who of the gallery is in a photo?")
    p.add_argument("image", type=Path, help="the photo")
    p.add_argument("--name", help="only check against this enrolled person")
    _gallery_opt(p), _threshold(p), _photos(p, every=True), _where(p)
    p = sub.add_parser("remove", help="remove a person from the gallery")
    p.add_argument("name")
    _gallery_opt(p)
    p = sub.add_parser("list", help="list the gallery")
    _gallery_opt(p)
    p = sub.add_parser("embed", help="embeddings of faces and the cosine of every pair")
    p.add_argument("faces", nargs="+", type=Path, help="photos, face crops or .npy arrays")
    p.add_argument("--values", type=cli.non_negative, default=8, help="embedding values to print "
                                                         "(default 8)")
    _photos(p, every=True), _where(p)
    return ap


def main(argv=None) -> int:
    return cli.run(_main, argv, prog="python -m firmware.run")


def _main(argv) -> int:
    from .driver import DeviceError, LinkError
    if argv and argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "embed")           # the original form: faces and options only
    args = parser().parse_args(argv)
    try:
        return globals()[f"cmd_{args.command}"](args, print)
    except (LinkError, DeviceError) as e:       # the run failed on the way
        raise cli.RunFailed(str(e)) from e


if __name__ == "__main__":
    sys.exit(main())
