#!/usr/bin/env bash
# Create .venv with ckpt installed (editable) and the test tools; idempotent.
# As root it installs gcc if missing and the Debian packages some tests need; any user
# can run it for the unit tier.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gcc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null
  else
    echo "bootstrap: gcc is missing; the tests on real processes need it (and root)" >&2
  fi
fi
# The network lock of TCP dumps (nftables, iptables as the fallback) and the servers
# the tests run (redis-server, nginx-light, postgresql, runc, podman with conmon), from Debian; as root only, and only what is missing.
# The small real programs of tests/test_real_*.py too (busybox comes from busybox-static,
# below; the JDK and node, large, are not installed here: their tests skip without them).
missing=""
for pair in nft:nftables iptables-restore:iptables redis-server:redis-server ip:iproute2 nginx:nginx-light runc:runc \
    memcached:memcached socat:socat inotifywait:inotify-tools screen:screen \
    tmux:tmux sqlite3:sqlite3 less:less top:procps vim:vim dbus-daemon:dbus-daemon \
    dbus-send:dbus-bin podman:podman conmon:conmon htop:htop bc:bc nano:nano dtach:dtach \
    mc:mc sshd:openssh-server apache2:apache2 mosquitto:mosquitto \
    mosquitto_pub:mosquitto-clients dnsmasq:dnsmasq-base nc:netcat-openbsd curl:curl \
    haproxy:haproxy make:make git:git xz:xz-utils zstd:zstd \
    tclsh:tcl ruby:ruby openssl:openssl gpg-agent:gpg-agent gpg-connect-agent:gpgconf \
    lighttpd:lighttpd expect:expect pv:pv ninja:ninja-build unbound:unbound Xvfb:xvfb \
    xclock:x11-apps emacs:emacs-nox erl:erlang-base php-fpm8.2:php-fpm \
    uwsgi:uwsgi-plugin-python3 named:bind9 rsync:rsync vsftpd:vsftpd fio:fio squid:squid \
    tcpdump:tcpdump mariadbd:mariadb-server-core mariadb:mariadb-client-core; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] \
    || missing="$missing ${pair##*:}"
done
# A static busybox, the rootfs of the containers runc runs in the tests
dpkg -s busybox-static >/dev/null 2>&1 || missing="$missing busybox-static"
# PostgreSQL 15 (its binaries are not on PATH), for the test of its SysV segment
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql-15"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "bootstrap: missing$missing (Debian packages; the tests that need them skip)" >&2
  fi
fi
# The venv's interpreter: the system's /usr/bin/python3 when it is 3.11 or later with
# venv (Debian's is built with PGO and LTO, libpython linked in: a command runs about
# 20% fewer instructions than under a shared-library build such as pyenv's, callgrind),
# else python3 on PATH. A venv made from another is made again from it.
base=python3
if /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
    2>/dev/null; then
  base=/usr/bin/python3
fi
if [ "$base" = /usr/bin/python3 ] && [ -f .venv/pyvenv.cfg ] \
    && ! grep -qx 'home = /usr/bin' .venv/pyvenv.cfg; then
  rm -rf .venv
fi
# (again when the commands predate the scripts of bin/, e.g. pip's entry points)
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/ckpt-criu ] \
    || ! grep -qi 'script of its own' .venv/bin/ckpt .venv/bin/ckpt-criu \
    || ! .venv/bin/python -c 'import ckpt, pytest' 2>/dev/null; then
  "$base" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
fi
# Optional, for speed (ckpt works without them): zlib-ng checksums page data 15 times
# faster than the standard library, zstandard compresses images (--compress).
if ! .venv/bin/python -c 'import zlib_ng, zstandard' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check zlib-ng zstandard \
    || echo "bootstrap: zlib-ng/zstandard could not be installed; ckpt runs slower without" >&2
fi
# setuptools is only needed to build ckpt (pip builds it in an environment of its own);
# left in the venv, its distutils hook runs at every interpreter start.
if [ -e .venv/lib/python3*/site-packages/distutils-precedence.pth ]; then
  .venv/bin/pip uninstall -q -y --disable-pip-version-check setuptools >/dev/null 2>&1 || true
fi
# Byte-compiled once (as an installed package is): with PYTHONDONTWRITEBYTECODE set, every
# command would otherwise compile ckpt from source at start-up.
.venv/bin/python -m compileall -q src >/dev/null
# The methods dataclasses writes for ckpt's classes, compiled once too (ckpt/dccache.py),
# and the code of ckpt's modules in one file the commands import them from (ckpt/modcache.py).
.venv/bin/python -m ckpt.dccache >/dev/null
# gunicorn, a real server the tests dump and restore (its test skips without it).
if [ "$(id -u)" = 0 ] && ! .venv/bin/python -c 'import gunicorn' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check gunicorn \
    || echo "bootstrap: gunicorn could not be installed; its test will be skipped" >&2
fi
