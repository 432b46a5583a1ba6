#!/usr/bin/env bash
# The tracer demo: two services that forward no trace headers (Node → Python), each under
# bin/rbinder, exporting to a local OTLP receiver; a few requests; then the traces as trees.
# Usage: bash demo/run.sh   (builds what is missing first)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi
if [ ! -f native/build/Release/rbinder_native.node ] || [ ! -f dist/tracer/rbinder.js ] || [ ! -x native/build/Release/rbinder-launch ]; then npm run build; fi
npx tsc -p tsconfig.json
exec node dist/demo/demo.js "$@"
