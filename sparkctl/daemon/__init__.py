"""`sparkctl serve`: the daemon as a systemd service — sockets from systemd, sd_notify and the
watchdog, journald logging, and the shutdown order — around the supervisor and the gateway."""
