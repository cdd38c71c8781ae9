#!/bin/sh
# Launcher for release {{release}} of {{bundle_id}}, written by offgrid pack-usb.
# Runs this stick's offgrid for this computer in portable mode:
#   sh run.sh            chat with the stick's default model ({{default_model}})
#   sh run.sh ARGS...    run `offgrid ARGS...` (for example: sh run.sh verify . --pubkey hq.pub)
# Generated file: it is listed in manifest.toml with its hash; do not edit it.
set -u
here=$(cd "$(dirname "$0")" && pwd -P) || exit 2

{{select_platform}}
OFFGRID_PORTABLE=$here
export OFFGRID_PORTABLE
[ $# -eq 0 ] && set -- run
if [ -z "$tmp" ]; then
  exec "$bin" "$@"
fi
"$bin" "$@"
status=$?
exit $status
