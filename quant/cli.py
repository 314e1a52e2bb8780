"""The error convention every command of the project follows (``python -m quant``,
``quant.counts``, ``quant.verification``, ``quant.reference_model``, ``quant.other_weights``,
``quant.faces``, ``firmware.compiler``, ``firmware.run``, ``sim.run_sim``, ``hw.build``).

- A user error (a file, an option, a board, an artifact, an image, a ``.bin``, a serial port)
  prints ONE line to stderr, ``<prog>: error: <culprit>: <what is wrong>``, and exits 2.
- A failed run (a check that did not pass, a tool that failed) exits 1.
- A traceback appears only with ``--debug``; without it an unexpected exception is one line
  too (exit 1) that says ``--debug`` shows the traceback.

Usage in a command::

    from quant import cli

    def main(argv=None):
        return cli.run(_main, argv, prog="python -m quant.counts")

    def _main(argv):
        ap = cli.ArgumentParser(prog="python -m quant.counts", description=...)
        ap.add_argument("--faces", type=cli.count, default=2)
        ...
        raise cli.UserError("--weights notes.txt", "not a PyTorch checkpoint")

The project's own error classes (``CheckpointError``, ``BoardError``, ``ArtifactError``,
``ImageError``, ``CompileError``, ``BinFormatError``, ``TransportError``, ``QuantizeError``)
derive from :class:`UserError`, so they follow the convention wherever they are raised.
"""
import argparse
import os
import sys
import traceback

__all__ = ["UserError", "RunFailed", "ArgumentParser", "run", "count", "non_negative",
           "int_range", "probability", "known", "one_line"]

USER_ERROR = 2
RUN_FAILED = 1


class UserError(Exception):
    """Bad input: ``UserError(culprit, what)`` or ``UserError(message)`` where the message
    already starts with the culprit. Exit code 2."""

    def __init__(self, culprit, what=None):
        self.culprit = culprit if what is not None else None
        self.what = what
        super().__init__(f"{culprit}: {what}" if what is not None else str(culprit))


class RunFailed(Exception):
    """The run was carried out and did not pass (a check failed, a tool failed). Exit 1."""


def one_line(text) -> str:
    """``text`` on one line: inner line breaks become ``; ``."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return "; ".join(parts)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the convention: a bad option is one line ``<prog>: error: ...`` on stderr
    and exit 2 (not argparse's usage block), and every parser (sub-parsers too) takes
    ``--debug``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help="show the Python traceback of an error")

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {one_line(message)}\n")
        sys.exit(USER_ERROR)


def _user_error_types():
    """Exceptions that are the user's input, not the program's failure."""
    return (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError)


def _describe(exc) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def run(main, argv=None, prog=None) -> int:
    """Call ``main(argv)`` under the convention and return the exit code.

    ``main`` returns 0 (or None) on success, 1 for a failed run, or raises. ``prog`` names the
    command in the messages (default: ``python -m <main's module>``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SEESAW_DEBUG") == "1"
    prog = prog or f"python -m {main.__module__}"
    try:
        code = main(args)
    except SystemExit as e:          # argparse --help / errors, or a command's own exit
        return e.code if isinstance(e.code, int) else (0 if e.code is None else RUN_FAILED)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except _user_error_types() as e:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{prog}: error: {one_line(_describe(e))}\n")
        return USER_ERROR
    except RunFailed as e:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{prog}: failed: {e}\n")
        return RUN_FAILED
    except Exception as e:
        if debug:
            traceback.print_exc()
        else:
            sys.stderr.write(f"{prog}: error: {type(e).__name__}: {one_line(e)} "
                             f"(an internal error; --debug shows the traceback)\n")
        return RUN_FAILED
    sys.stdout.flush()
    return 0 if code is None else int(code)


# -- option validators: argparse ``type=`` functions ------------------------------------------

def count(text) -> int:
    """An integer >= 1 (frames, faces, pairs, folds, steps, threads ...)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative(text) -> int:
    """An integer >= 0 (seeds, addresses)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def int_range(lo, hi, what="value"):
    """An argparse type: an integer in ``lo..hi`` (bit widths, iterations)."""
    def parse(text):
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be {lo}..{hi}, not {value}")
        return value
    parse.__name__ = what
    return parse


def positive_float(text) -> float:
    """A float > 0 (timeouts, clock rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value:g}")
    return value


def probability(text) -> float:
    """A float in [0, 1) (random stall and gap rates: 1 would never move)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, not {value:g}")
    return value


def known(names, what="name"):
    """An argparse type: one of ``names``; the error lists them all."""
    names = list(names)

    def parse(text):
        if text not in names:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; known: "
                                             f"{', '.join(names)}")
        return text
    parse.__name__ = what
    return parse


def variant(text) -> str:
    """A variant of the model zoo; the error lists the known ones."""
    from quant.zoo import VARIANTS
    return known(VARIANTS, "variant")(text)
