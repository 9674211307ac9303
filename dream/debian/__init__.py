"""Debian root filesystems without debootstrap: resolve with apt, unpack without scripts."""
