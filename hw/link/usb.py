"""The host link over USB full speed on the ULX3S's US2 port: a CDC-ACM serial device.

The ULX3S wires its second USB connector (US2) straight to FPGA pins. The ``luna-usb`` package
(LUNA, the Amaranth USB stack) provides a gateware full-speed PHY on such pins (oversampling at
48 MHz, ``usb_io`` domain; the UTMI side at 12 MHz, ``usb`` domain) and the USB device core with
its control endpoint and standard requests. On top of it :class:`CDCACMDevice` describes a
CDC-ACM ("USB serial") function, so the host sees a serial port and :mod:`firmware.transport`
speaks pyserial to it as to the FT231X UART.

:class:`USBHostLink` carries the same framed protocol as :class:`hw.link.framing.SerialHostLink`:
the bytes of the bulk OUT endpoint cross into the ``sync`` domain through an asynchronous FIFO
and feed :class:`hw.link.framing.HostLink`; its response bytes cross back through another and
leave on the bulk IN endpoint. Unlike the UART, USB has flow control: while the link is busy
its receive FIFO fills, the OUT endpoint's buffer fills and the device NAKs the host's packets
until there is room, so no byte is dropped. A packet with a bad CRC is not acknowledged and the
host resends it. A bus reset returns the device to address 0 (the host enumerates it again);
the frame parser's inter-byte timeout ends a frame cut short by it.

Pins: :func:`us2_resource`. Clocks: :func:`usb_pll` and :class:`USBClocking`.
"""
from amaranth import *
from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from firmware.transport import USB_PID, USB_VID
from hw.board.pll import ehxplll
from hw.link.framing import HostLink, connect_passed_members, passed_members

__all__ = ["us2_resource", "USBPins", "usb_pll", "USBClocking", "CDCACMDevice", "USBHostLink",
           "USB_VID", "USB_PID", "DATA_ENDPOINT", "NOTIFY_ENDPOINT", "MAX_PACKET",
           "USB_IO_MHZ", "USB_MHZ"]

# USB_VID, USB_PID: pid.codes' VID and its test PID (1209:0001), set aside for private testing;
# defined beside the host's firmware.transport.find_usb_port, which looks for them.
USB_MANUFACTURER = "seesaw-fpga"
USB_PRODUCT = "SeesawFaceNets accelerator"

#: The data interface's bulk endpoints (IN 0x81, OUT 0x01) and the communication interface's
#: interrupt endpoint (IN 0x82, never has data: the link reports no serial state).
DATA_ENDPOINT = 1
NOTIFY_ENDPOINT = 2
#: Full speed bulk endpoints carry at most 64 bytes a packet.
MAX_PACKET = 64
#: Bytes of each clock-domain crossing FIFO (one DP16KD or LUT RAM each).
FIFO_DEPTH = 128

#: The PHY's sampling clock and its UTMI clock.
USB_IO_MHZ = 48.0
USB_MHZ = 12.0


def us2_resource(number=0):
    """The US2 port's bidirectional D+/D- pins and the D+ pull-up control, as a resource named
    ``"us2"`` for the ULX3S platform.

    Pins, from the ULX3S v2.x/v3.0.x constraint file (emard/ulx3s, doc/constraints/
    ulx3s_v20.lpf, section 'Second USB port "US2" going directly into FPGA'):

    ====================  ====  ==========================================================
    usb_fpga_bd_dp        D15   D+, single-ended bidirectional: ``d_p``
    usb_fpga_bd_dn        E15   D-, single-ended bidirectional: ``d_n``
    usb_fpga_pu_dp        B12   1.5 kOhm to D+: driven high, the full-speed attach pull-up
    usb_fpga_pu_dn        C12   1.5 kOhm to D-: not requested (left an input, so it floats)
    usb_fpga_dp / _dn     E16 / F16  the same lines into a differential input: not used (the PHY
                          needs D+ and D- apart to see SE0)
    ====================  ====  ==========================================================

    The constraint file has ``PULLMODE=NONE`` on all of them (no internal pull on the USB
    lines), ``DRIVE=4`` on the bidirectional pair and ``DRIVE=16`` on the pull-up control.
    amaranth-boards 0.0.21's ULX3S platform has a ``usb`` resource on D15/E15/B12 too, without
    these pull and drive attributes; this one is the one the board top requests.
    """
    return Resource(
        "us2", number,
        Subsignal("d_p", Pins("D15", dir="io"), Attrs(DRIVE="4")),
        Subsignal("d_n", Pins("E15", dir="io"), Attrs(DRIVE="4")),
        Subsignal("pullup", Pins("B12", dir="o"), Attrs(DRIVE="16")),
        Attrs(IO_TYPE="LVCMOS33", PULLMODE="NONE"))


class _Pin:
    def __init__(self, name, output_only=False):
        self.o = Signal(name=f"{name}_o")
        if not output_only:
            self.i = Signal(name=f"{name}_i")
            self.oe = Signal(name=f"{name}_oe")


class USBPins:
    """The PHY's view of the US2 lines without a platform (``d_p``/``d_n`` with ``i``, ``o``,
    ``oe``; ``pullup.o``), for simulation and for :class:`hw.board.top.EngineSystem`; the board
    top connects them to the buffers of :func:`us2_resource`."""

    def __init__(self, name="usb"):
        self.d_p = _Pin(f"{name}_d_p")
        self.d_n = _Pin(f"{name}_d_n")
        self.pullup = _Pin(f"{name}_pullup", output_only=True)

    def ports(self):
        return [self.d_p.i, self.d_p.o, self.d_p.oe, self.d_n.i, self.d_n.o, self.d_n.oe,
                self.pullup.o]


# EHXPLLL limits, as hw/board/boards.py checks the engine's PLL against.
_VCO = (400.0, 800.0)
_PFD_MIN = 3.125


def usb_pll(oscillator_mhz):
    """EHXPLLL dividers that make exactly 48 MHz (``CLKOS``) and 12 MHz (``CLKOS2``) from the
    oscillator, feedback from ``CLKOP``: ``{"clki_div", "clkfb_div", "clkop_div", "clkos_div",
    "clkos2_div", "clkop_mhz", "vco_mhz"}``.

    USB full speed allows 0.25 % of bit-rate error, and 48 is not a multiple of 25 / n for
    any phase-detector input the PLL accepts: ``CLKOP`` (the feedback) runs at a multiple of 48
    instead. For 25 MHz: 25 / 5 * 48 = 240 MHz on ``CLKOP``, VCO 480 MHz, ``CLKOS`` = VCO / 10,
    ``CLKOS2`` = VCO / 40 (what yowasp-ecppll answers for ``-i 25 -o 240 --clkout1 48
    --clkout2 12``). Both outputs come from one VCO with zero phase: the 12 MHz edges fall on
    48 MHz edges, as LUNA's PHY needs.

    Raises
    ------
    ValueError
        When no divider set makes the two clocks exactly.
    """
    f_in = float(oscillator_mhz)
    for clki in range(1, 129):
        pfd = f_in / clki
        if pfd < _PFD_MIN:
            break
        # the smallest CLKOP divider first: the feedback at the highest frequency (what
        # yowasp-ecppll picks too)
        for clkop_div in range(1, 129):
            for clkfb in range(1, 81):
                op = pfd * clkfb
                vco = op * clkop_div
                if vco > _VCO[1] or op > 400:
                    break
                if vco < _VCO[0]:
                    continue
                os_div, os2_div = vco / USB_IO_MHZ, vco / USB_MHZ
                if (abs(os_div - round(os_div)) < 1e-9 and abs(os2_div - round(os2_div)) < 1e-9
                        and round(os2_div) <= 128):
                    return {"clki_div": clki, "clkfb_div": clkfb, "clkop_div": clkop_div,
                            "clkos_div": round(os_div), "clkos2_div": round(os2_div),
                            "clkop_mhz": op, "vco_mhz": vco}
    raise ValueError(f"no EHXPLLL divider set makes exactly {USB_IO_MHZ:g} and {USB_MHZ:g} MHz "
                     f"from a {oscillator_mhz:g} MHz oscillator (VCO {_VCO[0]:g}..{_VCO[1]:g} "
                     f"MHz, phase detector at least {_PFD_MIN} MHz); the USB link needs them")


class USBClocking(Elaboratable):
    """A second EHXPLLL (:func:`usb_pll`) on the oscillator: domains ``usb_io`` (48 MHz) and
    ``usb`` (12 MHz), each held in reset until the PLL locks."""

    def __init__(self, clk_in, oscillator_mhz):
        self.clk_in = clk_in
        self.oscillator_mhz = oscillator_mhz
        self.dividers = usb_pll(oscillator_mhz)
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        d = self.dividers
        m.domains.usb_io = cd_io = ClockDomain("usb_io")
        m.domains.usb = cd_usb = ClockDomain("usb")
        feedback = Signal()
        m.submodules.usb_pll = ehxplll(
            self.clk_in, feedback, self.locked,
            a_FREQUENCY_PIN_CLKI=f"{self.oscillator_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{d['clkop_mhz']:g}",
            a_FREQUENCY_PIN_CLKOS=f"{USB_IO_MHZ:g}",
            a_FREQUENCY_PIN_CLKOS2=f"{USB_MHZ:g}",
            p_CLKI_DIV=d["clki_div"], p_CLKFB_DIV=d["clkfb_div"], p_CLKOP_DIV=d["clkop_div"],
            p_CLKOP_CPHASE=0, p_CLKOP_FPHASE=0,
            p_CLKOS_ENABLE="ENABLED", p_CLKOS_DIV=d["clkos_div"],
            p_CLKOS_CPHASE=0, p_CLKOS_FPHASE=0,
            p_CLKOS2_ENABLE="ENABLED", p_CLKOS2_DIV=d["clkos2_div"],
            p_CLKOS2_CPHASE=0, p_CLKOS2_FPHASE=0,
            i_ENCLKOS=0, i_ENCLKOS2=0, o_CLKOS=cd_io.clk, o_CLKOS2=cd_usb.clk)
        m.submodules.usb_io_reset = ResetSynchronizer(~self.locked, domain="usb_io")
        m.submodules.usb_reset = ResetSynchronizer(~self.locked, domain="usb")
        return m


class CDCACMDevice(Elaboratable):
    """A full-speed CDC-ACM function on LUNA's device core: interface 0 (communication, one
    interrupt IN endpoint that never has data), interface 1 (data: bulk IN and OUT of
    :data:`MAX_PACKET` bytes on endpoint :data:`DATA_ENDPOINT`). Class requests: LUNA's ACM
    handler (SET_LINE_CODING accepted, the rest stalled); vendor requests stall. Domain
    ``usb`` (and ``usb_io`` in the PHY when ``bus`` is raw pins).

    Members: ``rx`` (LUNA stream out: bytes from the host), ``tx`` (LUNA stream in: bytes to
    the host), ``flush`` (send what the IN endpoint holds as a short packet), ``reset_detected``
    (a bus reset, one ``usb`` cycle), ``address`` (the device address the host set).
    """

    def __init__(self, bus, *, vid=USB_VID, pid=USB_PID, serial="0"):
        from luna.gateware.stream import StreamInterface
        self._bus = bus
        self.vid, self.pid, self.serial = vid, pid, serial
        self.rx = StreamInterface()
        self.tx = StreamInterface()
        self.flush = Signal()
        self.reset_detected = Signal()

    def descriptors(self):
        from usb_protocol.emitters import DeviceDescriptorCollection
        from usb_protocol.emitters.descriptors import cdc
        col = DeviceDescriptorCollection()
        with col.DeviceDescriptor() as d:
            d.idVendor, d.idProduct = self.vid, self.pid
            d.iManufacturer, d.iProduct, d.iSerialNumber = USB_MANUFACTURER, USB_PRODUCT, \
                self.serial
            d.bNumConfigurations = 1
        with col.ConfigurationDescriptor() as c:
            with c.InterfaceAssociationDescriptor() as iad:   # one function, two interfaces
                iad.bFirstInterface, iad.bInterfaceCount = 0, 2
                iad.bFunctionClass, iad.bFunctionSubClass, iad.bFunctionProtocol = 2, 2, 0
            with c.InterfaceDescriptor() as i:
                i.bInterfaceNumber = 0
                i.bInterfaceClass, i.bInterfaceSubclass, i.bInterfaceProtocol = 2, 2, 0
                i.add_subordinate_descriptor(cdc.HeaderDescriptorEmitter())
                call = cdc.CallManagementFunctionalDescriptorEmitter()
                call.bDataInterface = 1
                i.add_subordinate_descriptor(call)
                union = cdc.UnionFunctionalDescriptorEmitter()
                union.bControlInterface, union.bSubordinateInterface0 = 0, 1
                i.add_subordinate_descriptor(union)
                with i.EndpointDescriptor() as e:
                    e.bEndpointAddress = 0x80 | NOTIFY_ENDPOINT
                    e.bmAttributes = 0x03                     # interrupt
                    e.wMaxPacketSize = 8
                    e.bInterval = 255
            with c.InterfaceDescriptor() as i:
                i.bInterfaceNumber = 1
                i.bInterfaceClass = 0x0A                      # CDC data
                for address in (0x80 | DATA_ENDPOINT, DATA_ENDPOINT):
                    with i.EndpointDescriptor() as e:
                        e.bEndpointAddress = address
                        e.bmAttributes = 0x02                 # bulk
                        e.wMaxPacketSize = MAX_PACKET
        return col

    def elaborate(self, platform):
        from luna.gateware.usb.devices.acm import ACMRequestHandlers
        from luna.gateware.usb.usb2.device import USBDevice
        from luna.gateware.usb.usb2.endpoints.stream import (USBStreamInEndpoint,
                                                              USBStreamOutEndpoint)
        from luna.gateware.usb.usb2.request import StallOnlyRequestHandler
        from usb_protocol.types import USBRequestType
        m = Module()
        m.submodules.device = dev = USBDevice(bus=self._bus)
        ep0 = dev.add_standard_control_endpoint(self.descriptors())
        ep0.add_request_handler(ACMRequestHandlers())
        ep0.add_request_handler(StallOnlyRequestHandler(
            lambda setup: (setup.type == USBRequestType.VENDOR)
            | (setup.type == USBRequestType.RESERVED)))
        notify = USBStreamInEndpoint(endpoint_number=NOTIFY_ENDPOINT, max_packet_size=8)
        data_out = USBStreamOutEndpoint(endpoint_number=DATA_ENDPOINT,
                                        max_packet_size=MAX_PACKET)
        data_in = USBStreamInEndpoint(endpoint_number=DATA_ENDPOINT,
                                      max_packet_size=MAX_PACKET)
        # A bus reset starts the endpoints afresh: LUNA 0.2.3's stream endpoints return their
        # data toggle to DATA0 only on CLEAR_FEATURE(ENDPOINT_HALT), while a host enumerating
        # the device again starts its bulk pipes at DATA0 (USB 2.0 9.1.1.5); a stale toggle
        # would have the device ACK and drop the host's first packet.
        for ep in (notify, data_out, data_in):
            dev.add_endpoint(ResetInserter({"usb": dev.reset_detected})(ep))
        m.d.comb += [
            # The gateware PHY is full speed only: no high-speed chirp after a bus reset.
            dev.full_speed_only.eq(1),
            dev.connect.eq(1),
            data_in.stream.stream_eq(self.tx),
            data_in.flush.eq(self.flush),
            self.rx.stream_eq(data_out.stream),
            self.reset_detected.eq(dev.reset_detected),
        ]
        return m


class USBHostLink(wiring.Component):
    """:class:`hw.link.framing.HostLink` behind the CDC-ACM device: the board top's host link
    when ``boards.yaml`` says ``link: {kind: usb}``.

    Domains: ``sync`` (the link and its memory port), ``usb`` (12 MHz) and ``usb_io``
    (48 MHz), made by :class:`USBClocking` on the board or by a testbench.

    Parameters
    ----------
    pins : USBPins or the platform's ``us2`` resource, optional
        The D+/D- lines (default: a :class:`USBPins`, members ``pins``).
    **kwargs
        Passed to :class:`HostLink`.

    Members
    -------
    The memory, engine and result members of :class:`HostLink`; ``pins``.
    """

    def __init__(self, pins=None, **kwargs):
        self.pins = USBPins() if pins is None else pins
        self.device = CDCACMDevice(self.pins)
        self.link = HostLink(**kwargs)
        super().__init__(passed_members(self.link))

    def elaborate(self, platform):
        m = Module()
        m.submodules.usb = dev = self.device
        m.submodules.link = link = self.link
        # host -> device: OUT endpoint (usb) -> FIFO -> frame parser (sync). The endpoint's
        # ready follows the FIFO's room: when it is full the endpoint NAKs.
        m.submodules.rx_fifo = rx = AsyncFIFO(width=8, depth=FIFO_DEPTH, w_domain="usb",
                                              r_domain="sync")
        m.d.comb += [rx.w_data.eq(dev.rx.payload), rx.w_en.eq(dev.rx.valid),
                     dev.rx.ready.eq(rx.w_rdy),
                     link.i_stream.payload.eq(rx.r_data), link.i_stream.valid.eq(rx.r_rdy),
                     rx.r_en.eq(link.i_stream.ready)]
        # device -> host: responses (sync) -> FIFO -> IN endpoint (usb); when the FIFO has
        # nothing more, what the endpoint holds goes out as a short packet.
        m.submodules.tx_fifo = tx = AsyncFIFO(width=8, depth=FIFO_DEPTH, w_domain="sync",
                                              r_domain="usb")
        m.d.comb += [tx.w_data.eq(link.o_stream.payload), tx.w_en.eq(link.o_stream.valid),
                     link.o_stream.ready.eq(tx.w_rdy),
                     dev.tx.payload.eq(tx.r_data), dev.tx.valid.eq(tx.r_rdy),
                     dev.tx.first.eq(0), dev.tx.last.eq(0),
                     tx.r_en.eq(dev.tx.ready), dev.flush.eq(~tx.r_rdy),
                     link.rx_framing_error.eq(0), link.rx_overrun.eq(0)]
        connect_passed_members(m, self, link)
        return m
