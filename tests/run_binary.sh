#!/bin/bash
# Runs the binary given as the first argument with the remaining arguments; its exit code is the
# test result. For tests that are a binary run over data files (e.g. fuzz corpus replays).
exec "$@"
