#!/bin/bash
# Stage 2 of a sparkctl sandbox: runs as PID 1 of fresh pid/mount/uts/ipc/cgroup namespaces
# (started by launcher.py through unshare), builds the box's filesystem and execs systemd.
#
#   stage2.sh DIR CONSOLE_PTY PREFIX
#
# The box's / is an overlay over the host's / with its upper layer on a tmpfs that exists only in
# the box, so nothing the box writes reaches the host, except through these host-visible paths:
# DIR/run (the box's /run: D-Bus and Podman sockets), DIR/quadlet (/etc/containers/systemd),
# DIR/storage (/var/lib/containers) and DIR itself (same path inside). Paths listed in
# $SPARKCTL_BOX_SHARES (':'-separated) are bound read-only at the same path, so the box can run
# the project's interpreter and code even where they live under /tmp or on another filesystem.
set -eu
D=$1 CONSOLE=$2 PREFIX=$3
P5=$PREFIX/podman5
O=$D/.ovl R=$D/.ovl/root
E=$R/etc/systemd/system
export LIBMOUNT_UTAB=$D/.utab   # keep mount(8)'s bookkeeping off the host's /run/mount

mount -t tmpfs -o mode=0755 sparkctl-box-ovl "$O"
mkdir -p "$O"/{upper,work,root}
mount -t overlay -o lowerdir=/,upperdir="$O/upper",workdir="$O/work" sparkctl-box-root "$R"

# /proc of our own pid namespace; /proc/sys, /sys read-only: the box must not tune the host kernel
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"; mount -o remount,bind,ro,nosuid,nodev,noexec "$R/proc/sys"
if [ "${SPARKCTL_BOX_NET:-host}" = private ]; then   # own netns: netavark may write its /proc/sys/net
  mount --bind "$R/proc/sys/net" "$R/proc/sys/net"; mount -o remount,bind,rw,nosuid,nodev,noexec "$R/proc/sys/net"
fi
if [ -e "$R/proc/sysrq-trigger" ]; then
  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"; mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi
if [ "${SPARKCTL_BOX_NET:-host}" = private ]; then
  # a sysfs of our own netns: /sys/class/net shows the box's interfaces (its end of the link)
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
else
  mount --bind /sys "$R/sys"; mount -o remount,bind,ro,nosuid,nodev,noexec "$R/sys"
fi
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"   # our own subtree (cgroupns)

# a private /dev: no disks, no real console
mount -t tmpfs -o mode=0755,nosuid,size=16m sparkctl-box-dev "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3;    mknod -m 666 "$R/dev/zero" c 1 5;    mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8;  mknod -m 666 "$R/dev/urandom" c 1 9; mknod -m 666 "$R/dev/tty" c 5 0
mknod -m 666 "$R/dev/fuse" c 10 229; mkdir -p "$R/dev/net"; mknod -m 666 "$R/dev/net/tun" c 10 200
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev sparkctl-box-shm "$R/dev/shm"
mount -t mqueue -o nosuid,nodev,noexec mqueue "$R/dev/mqueue"
ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
touch "$R/dev/console"; mount --bind "$CONSOLE" "$R/dev/console"

# host-visible state, a private /tmp, and the shared read-only paths
mount --bind "$D/run" "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev sparkctl-box-tmp "$R/tmp"
mkdir -p "$R$D"; mount --bind "$D" "$R$D"; mount --bind "$D/run" "$R$D/run"
mkdir -p "$R/var/lib/containers" "$R/etc/containers/systemd"
mount --bind "$D/storage" "$R/var/lib/containers"
mount --bind "$D/quadlet" "$R/etc/containers/systemd"
IFS=: read -r -a shares <<< "${SPARKCTL_BOX_SHARES:-}"
for s in "${shares[@]}" "$PREFIX"; do
  [ -n "$s" ] && [ -d "$s" ] || continue
  mkdir -p "$R$s"; mount --bind "$s" "$R$s"; mount -o remount,bind,ro "$R$s"
  # Services run as other users (the daemon as `sparkctl`) must reach the shared interpreter and
  # code: let them traverse the directories above (e.g. /root, mode 0700). In the overlay only.
  p=$s
  while [ "$p" != / ]; do p=$(dirname "$p"); chmod o+x "$R$p" 2>/dev/null || true; done
done

# Podman 5.4 + crun + the Quadlet generator (symlinks live in the tmpfs upper layer only)
mkdir -p "$R/usr/libexec/podman" "$R/usr/lib/systemd/system-generators" "$R/usr/lib/systemd/user-generators"
ln -sf "$P5/usr/bin/podman" "$R/usr/bin/podman"
ln -sf "$P5/usr/bin/crun" "$R/usr/bin/crun"
ln -sf "$P5/usr/libexec/podman/quadlet" "$R/usr/libexec/podman/quadlet"
ln -sf "$P5/usr/libexec/podman/rootlessport" "$R/usr/libexec/podman/rootlessport"
ln -sf ../../../libexec/podman/quadlet "$R/usr/lib/systemd/system-generators/podman-system-generator"
ln -sf ../../../libexec/podman/quadlet "$R/usr/lib/systemd/user-generators/podman-user-generator"
cp "$P5"/usr/lib/systemd/system/podman* "$R/usr/lib/systemd/system/"
cp "$P5/usr/lib/tmpfiles.d/podman.conf" "$R/usr/lib/tmpfiles.d/podman.conf"
mkdir -p "$R/etc/containers/containers.conf.d"
{
  echo '[containers]'
  echo 'pids_limit = 0        # no pids controller: the host binds it to cgroup v1'
  [ "${SPARKCTL_BOX_NET:-host}" = private ] || echo 'netns = "host"       # share the host network namespace (loopback)'
  echo '[engine]'
  echo 'runtime = "crun"'
  echo 'cgroup_manager = "systemd"'
} > "$R/etc/containers/containers.conf.d/50-sparkctl-box.conf"

# a fake GPU, so AddDevice=nvidia.com/gpu=all resolves exactly as on a Spark with the CDI spec
mkdir -p "$R/etc/cdi"
cat > "$R/etc/cdi/sparkctl-box-fake-gpu.yaml" <<'EOT'
cdiVersion: "0.5.0"
kind: nvidia.com/gpu
devices:
- name: all
  containerEdits:
    env: [NVIDIA_VISIBLE_DEVICES=all]
    deviceNodes:
    - {path: /dev/nvidia0, hostPath: /dev/null}
- name: "0"
  containerEdits:
    env: [NVIDIA_VISIBLE_DEVICES=0]
    deviceNodes:
    - {path: /dev/nvidia0, hostPath: /dev/null}
containerEdits:
  env: [SPARKCTL_FAKE_GPU=1]
EOT

# units: mask what the host enabled and whatever touches the kernel, hardware, network or time
mkdir -p "$E"
for u in $(ls /etc/systemd/system/*.wants/ 2>/dev/null | grep -v ':$' | grep -v '^podman' | sort -u) \
    systemd-modules-load.service systemd-sysctl.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
    proc-sys-fs-binfmt_misc.mount systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
    systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-hwdb-update.service ldconfig.service \
    systemd-firstboot.service systemd-repart.service systemd-pcrphase.service systemd-pcrphase-sysinit.service \
    sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
    systemd-journald-audit.socket getty.target console-getty.service getty@.service serial-getty@.service \
    systemd-timesyncd.service systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service \
    systemd-resolved.service networking.service ifupdown-wait-online.service NetworkManager.service \
    NetworkManager-wait-online.service ssh.service cron.service rsyslog.service postgresql.service nginx.service \
    apt-daily.timer apt-daily-upgrade.timer man-db.timer fstrim.timer e2scrub_all.timer e2scrub_reap.service \
    dpkg-db-backup.timer systemd-pstore.service remote-fs.target podman-auto-update.timer podman-restart.service; do
  ln -sf /dev/null "$E/$u"
done
mkdir -p "$R/etc/systemd/system-generators"
for g in /usr/lib/systemd/system-generators/*; do
  case "${g##*/}" in
    podman-system-generator|systemd-fstab-generator|systemd-debug-generator|systemd-run-generator) continue;;
  esac
  ln -sf /dev/null "$R/etc/systemd/system-generators/${g##*/}"
done
cat > "$E/sparkctl-box.target" <<'EOT'
[Unit]
Description=sparkctl sandbox (basic system, D-Bus, Podman API socket)
Requires=basic.target
Wants=dbus.socket podman.socket
After=basic.target
AllowIsolate=yes
EOT
ln -sf sparkctl-box.target "$E/default.target"
tr -d '-' < /proc/sys/kernel/random/uuid > "$R/etc/machine-id"
echo sparkctl-box > "$R/etc/hostname"

cd "$R"; mkdir -p .oldroot; pivot_root . .oldroot
umount -l /.oldroot; rmdir /.oldroot
exec env -i container=sparkctl-box TERM=vt220 LANG=C.UTF-8 /lib/systemd/systemd --log-level=info
