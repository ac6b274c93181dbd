#!/bin/sh
# require-inputs.sh IMAGE FILE...
#
# Stops a build at its first step when the builder has not supplied a file the image needs:
# patches whose content sparkctl does not ship (see containerfiles/README.md, "Inputs you
# supply"). FILE is relative to the build context (containerfiles/), copied to /opt/sparkctl.
# Failing here takes seconds; failing at the step that uses the file could take an hour.
set -eu
image=$1
shift
missing=""
for f in "$@"; do
  [ -s "/opt/sparkctl/$f" ] || missing="$missing containerfiles/$f"
done
if [ -n "$missing" ]; then
  echo "error: $image cannot be built: these inputs are not supplied:" >&2
  for f in $missing; do echo "  $f" >&2; done
  echo "See containerfiles/README.md (Inputs you supply) for what each one is and where it comes from." >&2
  exit 1
fi
