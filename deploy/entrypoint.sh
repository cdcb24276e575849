#!/bin/sh
# Entry point of the container image (deploy/Dockerfile); also usable on its own.
#   hitl-entrypoint [run [ARGS]]   hitl doctor (its report goes to the log), then exec hitl run
#   hitl-entrypoint COMMAND ...    any other hitl command: doctor [--json], request, policy check ...
# HITL_DOCTOR: "warn" (default) starts even when the doctor finds errors, "strict" does not
# start then (exit 1), "off" skips the doctor.
set -eu

HITL="${HITL_BIN:-hitl}"
if [ "${1:-run}" != run ]; then
  exec "$HITL" "$@"
fi
[ $# -gt 0 ] && shift

case "${HITL_DOCTOR:-warn}" in
  off) ;;
  strict)
    if ! "$HITL" doctor; then
      echo "hitl-entrypoint: hitl doctor found errors (above); not starting (HITL_DOCTOR=strict)" >&2
      exit 1
    fi ;;
  warn)
    "$HITL" doctor ||
      echo "hitl-entrypoint: hitl doctor found errors (above); starting anyway (HITL_DOCTOR=strict would stop)" >&2 ;;
  *)
    echo "hitl-entrypoint: HITL_DOCTOR must be warn, strict or off (got '${HITL_DOCTOR}')" >&2
    exit 2 ;;
esac
exec "$HITL" run "$@"
