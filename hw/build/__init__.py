"""The build flow: python -m hw.build --board ulx3s."""
