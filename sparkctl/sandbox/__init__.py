"""A real systemd 252 with its system bus, polkit, Podman 5 and Quadlet, booted in namespaces on a
machine whose PID 1 is not systemd: the integration tests' substrate and `sparkctl demo`'s stage.
`box` boots and drives one; `image` builds the emulator's container image; `install.sh` puts the
substrate on the host."""
