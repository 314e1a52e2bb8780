"""CRC-16/CCITT-FALSE of the host link's frames (:func:`firmware.protocol.crc16`) as logic: the
receiver (:mod:`hw.link.frame_rx`) checks it, the transmitter (:mod:`hw.link.frame_tx`)
appends it."""
from amaranth import C, Cat

__all__ = ["crc16_next"]


def _crc16_matrix():
    """For each CRC output bit, the CRC input bits and data bits that it is the XOR of.

    Runs the bitwise loop on symbolic bits (sets of inputs, XOR = symmetric difference), so the
    logic is one flat XOR per bit: unrolling the loop with ``Mux`` would duplicate the expression
    tree at every step."""
    bits = [{("c", k)} for k in range(16)]
    for k in range(8):
        bits[8 + k] = bits[8 + k] ^ {("d", k)}
    for _ in range(8):
        top = bits[15]
        bits = [set()] + bits[:15]
        for k in (0, 5, 12):                   # 0x1021
            bits[k] = bits[k] ^ top
    return [sorted(b) for b in bits]


_CRC16_MATRIX = _crc16_matrix()


def crc16_next(crc, byte):
    """One byte of CRC-16/CCITT-FALSE (:func:`firmware.protocol.crc16`) as combinational logic."""
    src = {"c": crc, "d": byte}
    out = []
    for terms in _CRC16_MATRIX:
        value = C(0, 1)
        for name, k in terms:
            value = value ^ src[name][k]
        out.append(value)
    return Cat(*out)
