#!/bin/sh
# Entry point of the Flotilla image: `flotilla-service <app> [args...]` runs dist/apps/<app>/src/main.js
# (gateway, compute, storage, network, migration, host-agent or cli). The app may also come from
# FLOTILLA_SERVICE. With neither it lists the apps and exits 64: the image runs nothing by default.
set -eu
root="${FLOTILLA_HOME:-/app}"
apps() { for d in "$root"/dist/apps/*/src/main.js; do d="${d%/src/main.js}"; printf ' %s' "${d##*/}"; done; }
app="${1:-${FLOTILLA_SERVICE:-}}"
if [ -z "$app" ]; then
  echo "usage: flotilla-service <app> [args...]; apps:$(apps)" >&2
  exit 64
fi
[ $# -gt 0 ] && shift
case "$app" in
  *[!a-z0-9-]*)
    echo "flotilla-service: invalid app name '$app'; apps:$(apps)" >&2
    exit 64
    ;;
esac
main="$root/dist/apps/$app/src/main.js"
if [ ! -f "$main" ]; then
  echo "flotilla-service: no app '$app' in this image; apps:$(apps)" >&2
  exit 64
fi
exec node "$main" "$@"
