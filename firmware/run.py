"""Run faces on the board: ``python -m firmware.run --port /dev/ttyUSB0 face.jpg other.jpg``.

Uploads the memory image (weights and layer program, as built for the board), runs each face,
prints the first embedding values and the pairwise cosine similarities.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from quant import cli

DESCRIPTION = """\
Run faces through the SeesawFaceNet accelerator on a ULX3S over its USB-UART.

The memory image (--image) is uploaded as opaque bytes. If it starts with the SFIM header
(see firmware/driver.py) the header gives the load address, the face input address and the
input size; otherwise the image goes to --load-addr (16-bit word addresses; decimal or 0x
hex). Without --image, the memory is assumed loaded already.

Faces: image files (anything scikit-image reads: jpg, png) resized to the input size, or .npy
arrays of uint8 H x W x 3. Each face is sent to the engine's input stream (FACE_DATA frames;
or, with --face-via memory, written to --input-addr and started with RUN), and the integer
embedding is read back; the tool prints the first values of each embedding and the
cosine similarity of every pair.
"""


def load_face(path: Path, shape) -> np.ndarray:
    h, w, c = shape
    if path.suffix == ".npy":
        face = np.load(path)
    else:
        from skimage import io
        face = io.imread(path)
    if face.ndim == 2:
        face = np.stack([face] * 3, axis=-1)
    face = face[..., :c]
    if face.shape[:2] != (h, w):
        from skimage.transform import resize
        face = resize(face, (h, w), preserve_range=True, anti_aliasing=True)
        face = np.clip(np.round(face), 0, 255)
    return np.ascontiguousarray(face.astype(np.uint8))


def parse_args(argv=None):
    ap = cli.ArgumentParser(prog="python -m firmware.run", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("faces", nargs="+", type=Path, help="face images (jpg/png) or .npy arrays")
    ap.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    ap.add_argument("--baud", type=cli.count, default=3_000_000, help="UART baud rate (default 3000000)")
    ap.add_argument("--image", type=Path, help="memory image to upload first, e.g. "
                                                "build/ulx3s/memory.bin")
    ap.add_argument("--load-addr", type=lambda s: int(s, 0), default=0,
                    help="word address for an image without header (default 0)")
    ap.add_argument("--input-addr", type=lambda s: int(s, 0),
                    help="word address of the face input (overrides the image header)")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                    help="face size when the image has no header (default 112 112)")
    ap.add_argument("--face-via", choices=("stream", "memory"), default="stream",
                    help="send faces as FACE_DATA to the engine's input stream (default), or "
                         "write them to --input-addr and RUN (for designs that read the face "
                         "from memory; the shipped engine refuses RUN with UNSUPPORTED)")
    ap.add_argument("--verify", action="store_true", help="read the memory image back and "
                                                         "compare")
    ap.add_argument("--timeout", type=cli.positive_float, default=1.0, help="seconds per response (default 1)")
    ap.add_argument("--retries", type=cli.non_negative, default=3, help="resends per frame (default 3)")
    ap.add_argument("--run-timeout", type=cli.positive_float, default=10.0,
                    help="seconds to wait for one face (default 10)")
    ap.add_argument("--show", type=cli.non_negative, default=8, help="embedding values to print (default 8)")
    return ap, ap.parse_args(argv)


def main(argv=None) -> int:
    return cli.run(_main, argv, prog="python -m firmware.run")


def _main(argv) -> int:
    from .driver import Device, DeviceError, ImageHeader, LinkError, cosine
    from .transport import SerialTransport, TransportError

    ap, args = parse_args(argv)
    for f in args.faces:
        if not f.exists():
            ap.error(f"face file {str(f)!r} does not exist")
    image = None
    header = None
    if args.image is not None:
        if not args.image.exists():
            ap.error(f"memory image {str(args.image)!r} does not exist")
        image = args.image.read_bytes()
        try:
            header = ImageHeader.parse(image)
        except ValueError as e:
            ap.error(f"memory image {str(args.image)!r}: {e}")
    if args.face_via == "memory" and args.input_addr is None and header is None:
        ap.error("--face-via memory needs --input-addr or an --image with a header")
    shape = header.input_shape if header else (*(args.input_size or (112, 112)), 3)
    faces = []
    for f in args.faces:
        try:
            faces.append(load_face(f, shape))
        except Exception as e:      # a file that is not an image: name it
            raise cli.UserError(str(f), f"cannot read the face: {cli.one_line(e)}") from e

    transport = SerialTransport(args.port, args.baud)    # TransportError: exit 2
    try:
        with transport:
            dev = Device(transport, timeout=args.timeout, retries=args.retries,
                         input_addr=args.input_addr, face_via=args.face_via)
            st = dev.status()
            print(f"device: protocol v{st.version}, max payload {st.max_payload} bytes, "
                  f"{st.n_result} results, busy={st.busy}")
            if image is not None:
                t = time.monotonic()
                dev.load_image(image, load_addr=args.load_addr, verify=args.verify)
                dt = time.monotonic() - t
                print(f"uploaded {len(image)} bytes in {dt:.2f} s "
                      f"({len(image) / max(dt, 1e-9) / 1e3:.1f} kB/s)")
            if args.input_addr is not None:
                dev.input_addr = args.input_addr
            embeddings = []
            for path, face in zip(args.faces, faces):
                t = time.monotonic()
                emb = dev.run_face(face, timeout=args.run_timeout)
                embeddings.append(emb)
                head = " ".join(str(int(v)) for v in emb[:args.show])
                print(f"{path.name}: {time.monotonic() - t:.3f} s, [{head} ...] "
                      f"({len(emb)} values)")
            if len(embeddings) > 1:
                print("cosine similarity:")
                for i in range(len(embeddings)):
                    for j in range(i + 1, len(embeddings)):
                        print(f"  {args.faces[i].name} vs {args.faces[j].name}: "
                              f"{cosine(embeddings[i], embeddings[j]):+.4f}")
            st = dev.status()
            if st.bad_frames or st.framing_errors:
                print(f"link: {st.bad_crc} bad CRC, {st.bad_length} bad length, {st.timeouts} "
                      f"cut frames, {st.framing_errors} framing errors, "
                      f"{dev.stats['resends']} resends")
    except (LinkError, DeviceError, TransportError) as e:   # the run failed on the way
        raise cli.RunFailed(f"--port {args.port}: {e}") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
