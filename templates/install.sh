#!/bin/sh
# Installs release {{release}} of {{bundle_id}} from this stick onto this computer,
# written by offgrid pack-usb. Runs `offgrid install --from STICK ARGS...` with this
# stick's offgrid for this computer; `sh install.sh --help` lists the options.
# After a successful install it also installs offgrid's shell completions and manual
# page for this user (SPEC.md §15.3; OFFGRID_NO_SHELL_FILES=1 skips that):
#   bash: ${XDG_DATA_HOME:-~/.local/share}/bash-completion/completions/offgrid
#   zsh:  ${XDG_DATA_HOME:-~/.local/share}/zsh/site-functions/_offgrid (when zsh is here)
#   fish: ${XDG_CONFIG_HOME:-~/.config}/fish/completions/offgrid.fish (when fish is here)
#   man:  ${XDG_DATA_HOME:-~/.local/share}/man/man1/offgrid.1
# Generated file: it is listed in manifest.toml with its hash; do not edit it.
set -u
here=$(cd "$(dirname "$0")" && pwd -P) || exit 2

{{select_platform}}
"$bin" install --from "$here" "$@"
status=$?

# Writes `offgrid ARGS` into FILE (through FILE.tmp, so a failure leaves no half file).
shell_file() {
  file=$1; shift
  mkdir -p "$(dirname "$file")" && "$bin" "$@" > "$file.tmp" && mv -f "$file.tmp" "$file" && {
    echo "offgrid: installed $file" >&2
    return 0
  }
  rm -f "$file.tmp"
  echo "offgrid: warning: could not write $file (the install itself succeeded)" >&2
}

skip=${OFFGRID_NO_SHELL_FILES:-}
case " $* " in
  *" -h "*|*" --help "*|*" -V "*|*" --version "*) skip=1 ;;
esac
if [ "$status" = 0 ] && [ -z "$skip" ] && [ -n "${HOME:-}" ] \
   && [ "$os" != windows ]; then
  data=${XDG_DATA_HOME:-$HOME/.local/share}
  shell_file "$data/bash-completion/completions/offgrid" completions bash
  if command -v zsh >/dev/null 2>&1; then
    shell_file "$data/zsh/site-functions/_offgrid" completions zsh
  fi
  if command -v fish >/dev/null 2>&1; then
    shell_file "${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions/offgrid.fish" completions fish
  fi
  shell_file "$data/man/man1/offgrid.1" manpage
fi
exit $status
