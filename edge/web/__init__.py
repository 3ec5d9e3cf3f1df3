"""Web pages: the device's own page for the installer (live view, health, /metrics; the
standard library's HTTP server, so it runs on the Jetson's Python 3.6)."""
