"""sparkctl: a systemd-native inference stack for the NVIDIA DGX Spark."""

__version__ = "0.1.0"
