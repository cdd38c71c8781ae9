# Which platform is this? uname -s / uname -m mapped onto offgrid's platform tags.
os=$(uname -s 2>/dev/null || echo unknown)
cpu=$(uname -m 2>/dev/null || echo unknown)
case "$os" in
  Linux) os=linux ;;
  Darwin) os=macos ;;
  FreeBSD) os=freebsd ;;
  MINGW*|MSYS*|CYGWIN*) os=windows ;;
esac
case "$cpu" in
  x86_64|amd64|AMD64) cpu=x86_64 ;;
  arm64|aarch64|ARM64) cpu=aarch64 ;;
  armv7l|armv7|armv7*) cpu=armv7 ;;
  riscv64) cpu=riscv64 ;;
esac
platform="$os-$cpu"
exe=offgrid
[ "$os" = windows ] && exe=offgrid.exe
bin="$here/bin/$platform/$exe"
if [ ! -f "$bin" ] && [ "$platform" = macos-aarch64 ] && [ -f "$here/bin/macos-x86_64/offgrid" ]; then
  # Apple silicon runs x86_64 binaries through Rosetta.
  platform=macos-x86_64
  bin="$here/bin/$platform/offgrid"
fi
if [ ! -f "$bin" ]; then
  echo "offgrid: this stick has no offgrid for this computer ($platform; uname: $(uname -s 2>/dev/null) $(uname -m 2>/dev/null))" >&2
  echo "offgrid: platforms on this stick: {{platforms}}" >&2
  echo "help: use a computer of one of those platforms, or ask HQ for a stick that carries $platform" >&2
  exit 2
fi
tmp=
if [ ! -x "$bin" ]; then
  # FAT sticks often lose the exec bit or are mounted noexec: run a private copy.
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/offgrid.XXXXXX") || exit 2
  trap 'rm -rf "$tmp"' EXIT
  trap 'rm -rf "$tmp"; exit 130' INT TERM
  cp "$bin" "$tmp/$exe" && chmod 755 "$tmp/$exe" || {
    echo "offgrid: cannot copy '$bin' to '$tmp' to run it" >&2
    exit 2
  }
  bin="$tmp/$exe"
fi
