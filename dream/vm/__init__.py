"""A bootable VM from an image's own layers (``build:vm``/``render:vm``, ``run:vm``).

dream/vm/build.py assembles the root (the image's layer blobs, the VM's locked Debian packages,
fix-ups, the deployment's systemd units) and writes the ext4 disk, kernel and initramfs into
the store; dream/vm/run.py boots them with QEMU (dream/vm/qemu.py). The parts: layers.py
(layers → one tree, whiteouts honoured), packages.py (the VM's packages locked over the
image's), system.py (maintainer-script and guest fix-ups), ext4.py (a byte-reproducible
mke2fs -d), modules.py and initramfs.py (dream's own initramfs), cpio.py, rootexec.py
(the root's own depmod and Python, run without chroot), spec.py (the ``vm:`` settings).
"""
