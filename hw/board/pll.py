"""The ECP5 ``EHXPLLL`` as the board top and the USB clocking instantiate it."""
from amaranth import Instance


def ehxplll(clk_in, feedback, locked, **outputs):
    """An ``EHXPLLL`` fed by ``clk_in`` with feedback from CLKOP (``feedback`` is the CLKOP
    net), the loop-filter settings and static phase inputs every ULX3S design here uses, and
    ``outputs``: the ``a_FREQUENCY_PIN_*`` attributes, the divider and phase parameters of
    the outputs in use, their ``i_EN*`` and ``o_*`` ports."""
    return Instance(
        "EHXPLLL",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC",
        p_OUTDIVIDER_MUXD="DIVD",
        p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
        i_RST=0, i_STDBY=0, i_CLKI=clk_in, i_CLKFB=feedback,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0, o_CLKOP=feedback, o_LOCK=locked,
        **outputs)
