"""Byte transports under the host driver: the board's USB-UART or its US2 USB port, or a
simulated link.

Both board links are serial ports to the host: the FT231X USB-UART on US1, and on a board
built with ``link: {kind: usb}`` the accelerator's own CDC-ACM device on US2
(:mod:`hw.link.usb`, VID:PID :data:`USB_VID`:``USB_PID``), which :func:`find_usb_port` finds
and ``SerialTransport("usb")`` opens (a CDC-ACM port ignores the baud rate).

The driver (:mod:`firmware.driver`) only calls :meth:`Transport.write`, :meth:`Transport.read`
and :meth:`Transport.discard_input`, so the same driver code talks to the ULX3S through
:class:`SerialTransport` and to the cocotb simulation of the gateware through
:class:`QueueTransport` (the testbench moves the bytes between the queues and the UART pins;
see ``sim/tb_link.py``).
"""
from __future__ import annotations

import queue
import time

from quant.cli import UserError


class TransportError(UserError, OSError):
    """The transport itself failed (cannot open the port, device unplugged)."""


#: The CDC-ACM device of the USB link (hw/link/usb.py): pid.codes' VID and its test PID.
USB_VID = 0x1209
USB_PID = 0x0001


def find_usb_port(vid: int = USB_VID, pid: int = USB_PID) -> str:
    """The serial port of the accelerator's USB link (a CDC-ACM device ``vid:pid``).

    Raises
    ------
    TransportError
        If there is none, or more than one (naming them: pick one with its path).
    """
    from serial.tools import list_ports
    ports = sorted(p.device for p in list_ports.comports() if (p.vid, p.pid) == (vid, pid))
    if not ports:
        raise TransportError(f"no USB serial device {vid:04x}:{pid:04x} (the board's US2 port, "
                             f"a bitstream built with link kind 'usb') is connected")
    if len(ports) > 1:
        raise TransportError(f"{len(ports)} USB serial devices {vid:04x}:{pid:04x}: "
                             f"{', '.join(ports)}; give the port's path")
    return ports[0]


class Transport:
    """Interface of a byte transport."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes: returns as soon as some have arrived (all that are there, up to
        ``n``), or with nothing when ``timeout`` expires; never blocks longer. (Waiting for
        ``n`` bytes would hold every short response, an 8-byte ACK, for the whole timeout.)"""
        raise NotImplementedError

    def clock(self) -> float:
        """Seconds on the clock the driver's timeouts count on: the host's own (a board), or
        the simulated one (:class:`QueueTransport` fed by a testbench)."""
        return time.monotonic()

    def discard_input(self) -> None:
        """Drop whatever has been received and not read."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """The FT231X USB-UART (any pyserial port): 8N1 at ``baud``; ``port="usb"``: the
    board's US2 CDC-ACM port (:func:`find_usb_port`).

    Raises
    ------
    TransportError
        If the port cannot be opened; the message names the port and the baud rate.
    """

    def __init__(self, port: str, baud: int = 3_000_000):
        import serial
        if port == "usb":               # the US2 CDC-ACM device, found by VID:PID
            port = find_usb_port()
        self.port, self.baud = port, baud
        try:
            self.serial = serial.Serial(port, baud, timeout=0.1, write_timeout=5.0)
        except (serial.SerialException, OSError, ValueError) as e:
            raise TransportError(f"cannot open serial port {port!r} at {baud} baud: {e}") from e
        # FTDI chips hold short responses (an 8-byte ACK) up to their latency timer, 16 ms by
        # default on Linux; low-latency mode sets it to 1 ms. Best effort: not every OS has it.
        try:
            self.serial.set_low_latency_mode(True)
        except (AttributeError, OSError, ValueError, NotImplementedError):
            pass

    def write(self, data: bytes) -> None:
        import serial
        try:
            self.serial.write(data)
            self.serial.flush()
        except (serial.SerialException, OSError) as e:
            raise TransportError(f"write to serial port {self.port!r} failed: {e}") from e

    def read(self, n: int, timeout: float) -> bytes:
        import serial
        try:
            self.serial.timeout = max(0.0, timeout)
            first = self.serial.read(1)
            if not first or n <= 1:
                return first
            return first + self.serial.read(min(n - 1, self.serial.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise TransportError(f"read from serial port {self.port!r} failed: {e}") from e

    def discard_input(self) -> None:
        self.serial.reset_input_buffer()

    def close(self) -> None:
        self.serial.close()


class QueueTransport(Transport):
    """Bytes through two thread-safe queues, for a simulation running in another thread.

    The host side calls :meth:`write`/:meth:`read`; the testbench side takes the host's bytes
    with :meth:`device_take` and delivers the device's bytes with :meth:`device_put`.
    :attr:`host_waiting` is true while the host is blocked in :meth:`read`: a testbench that
    advances the simulated clock only then gives the host no turnaround time in simulated
    cycles (``sim/tb_board.py``), whatever the machine's load.

    A testbench that calls :meth:`set_time` with the simulated time puts the driver's
    timeouts on the simulated clock (:meth:`clock`): a response is late when the design
    takes too many cycles, never because the machine is loaded and the simulation slow.
    Then a simulated clock that stands still for ``stall_seconds`` of real time while the
    host waits raises :class:`TransportError` (a testbench that stopped advancing it would
    otherwise hold the host forever). Without :meth:`set_time` the timeouts are real seconds.
    """

    def __init__(self, stall_seconds: float = 600.0):
        self.to_device: queue.Queue[bytes] = queue.Queue()
        self.from_device: queue.Queue[bytes] = queue.Queue()
        self.stall_seconds = stall_seconds
        self._pending = bytearray()
        self._sim_seconds = None
        self.closed = False
        self.host_waiting = False

    def set_time(self, seconds: float) -> None:
        """Testbench side: the simulated time now, in seconds."""
        self._sim_seconds = seconds

    def clock(self) -> float:
        sim = self._sim_seconds
        return time.monotonic() if sim is None else sim

    # host side
    def write(self, data: bytes) -> None:
        if self.closed:
            raise TransportError("write to a closed simulation transport")
        self.to_device.put(bytes(data))

    def read(self, n: int, timeout: float) -> bytes:
        deadline = self.clock() + timeout
        self.host_waiting = True
        try:
            last, still_since = self.clock(), time.monotonic()
            while not self._pending:
                now = self.clock()
                if now >= deadline:
                    break
                simulated = self._sim_seconds is not None
                try:
                    # on the simulated clock, poll: the testbench's thread moves the time
                    self._pending += self.from_device.get(
                        timeout=0.05 if simulated else deadline - now)
                except queue.Empty:
                    if not simulated:
                        break
                    if self.clock() != last:
                        last, still_since = self.clock(), time.monotonic()
                    elif time.monotonic() - still_since > self.stall_seconds:
                        raise TransportError(
                            f"the simulation's clock stood at {last:.6f} s for "
                            f"{self.stall_seconds:g} s of real time while the host waited "
                            f"for {n} byte(s)") from None
            while len(self._pending) < n:       # what else is there, without waiting
                try:
                    self._pending += self.from_device.get_nowait()
                except queue.Empty:
                    break
        finally:
            self.host_waiting = False
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def discard_input(self) -> None:
        self._pending.clear()
        while True:
            try:
                self.from_device.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        self.closed = True

    # testbench side
    def device_take(self) -> bytes | None:
        try:
            return self.to_device.get_nowait()
        except queue.Empty:
            return None

    def device_put(self, data: bytes) -> None:
        self.from_device.put(bytes(data))


class FaultyTransport(Transport):
    """Wraps a transport and damages chosen writes and reads, to test the driver's recovery.

    ``corrupt_writes``: indices of :meth:`write` calls whose middle byte is inverted;
    ``drop_writes``: indices of writes that are cut to their first half (a cut frame);
    ``mute_reads``: the first ``mute_reads`` reads that return data lose it (a lost response).
    """

    def __init__(self, inner: Transport, corrupt_writes=(), drop_writes=(), mute_reads=0):
        self.inner = inner
        self.corrupt_writes, self.drop_writes = set(corrupt_writes), set(drop_writes)
        self.mute_reads = mute_reads
        self.writes = 0

    def write(self, data: bytes) -> None:
        k = self.writes
        self.writes += 1
        data = bytearray(data)
        if k in self.corrupt_writes:
            data[len(data) // 2] ^= 0xFF
        if k in self.drop_writes:
            data = data[:len(data) // 2]
        self.inner.write(bytes(data))

    def read(self, n: int, timeout: float) -> bytes:
        data = self.inner.read(n, timeout)
        if data and self.mute_reads:
            self.mute_reads -= 1
            return b""
        return data

    def clock(self) -> float:
        return self.inner.clock()

    def discard_input(self) -> None:
        self.inner.discard_input()

    def close(self) -> None:
        self.inner.close()
