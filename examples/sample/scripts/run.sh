#!/bin/sh
# Executable bits survive ingest and every projection.
exec cargo run --quiet -- "$@"
