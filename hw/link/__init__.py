"""Host link: UART and the framed command protocol."""
