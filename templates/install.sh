#!/bin/sh
# Installs release {{release}} of {{bundle_id}} from this stick onto this computer,
# written by offgrid pack-usb. Runs `offgrid install --from STICK ARGS...` with this
# stick's offgrid for this computer; `sh install.sh --help` lists the options.
# Generated file: it is listed in manifest.toml with its hash; do not edit it.
set -u
here=$(cd "$(dirname "$0")" && pwd -P) || exit 2

{{select_platform}}
if [ -z "$tmp" ]; then
  exec "$bin" install --from "$here" "$@"
fi
"$bin" install --from "$here" "$@"
status=$?
exit $status
