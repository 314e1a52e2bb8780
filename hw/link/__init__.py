"""Host link: UART, USB full speed (CDC-ACM on the ULX3S US2 port) and the framed command protocol."""
