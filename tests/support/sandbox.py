"""A read-only root for a process as the image runs it: UID 1000, no capabilities,
nothing writable but a fresh /tmp (unshare, mount and setpriv from util-linux)."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import ROOT

# Runs "$@" as UID/GID 1000 without capabilities, chrooted into a recursive bind of / in
# which every mount is read-only; only /tmp is a fresh writable tmpfs. /root (mode 0700)
# is replaced by a tmpfs holding a read-only bind of the Python installation, so the
# unprivileged user can run the interpreter as it could in the image. A checkout under
# /tmp (CI clones there) is bound back, read-only, over the fresh /tmp.
SANDBOX = r"""
set -eu
R=$1; P=$2; shift 2
mount --rbind / "$R"
awk '{print $5}' /proc/self/mountinfo | grep "^$R" | sort | while read -r m; do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
mount -t tmpfs -o mode=1777,size=256m tmpfs "$R/tmp"
case "$P" in
  /tmp/*) mkdir -p "$R$P" && mount --bind "$P" "$R$P" && mount -o remount,bind,ro "$R$P" ;;
esac
mount -t tmpfs -o mode=0755,size=1m tmpfs "$R/root"
if [ -d /root/.pyenv ]; then
  mkdir "$R/root/.pyenv" && mount --bind /root/.pyenv "$R/root/.pyenv"
  mount -o remount,bind,ro "$R/root/.pyenv"
fi
exec chroot "$R" setpriv --reuid=1000 --regid=1000 --clear-groups --no-new-privs \
  --inh-caps=-all --bounding-set=-all "$@"
"""


def sandboxed(root: Path, *command: str) -> list[str]:
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox",
            str(root), str(ROOT), *command]  # fmt: skip
