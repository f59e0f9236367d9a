#!/bin/sh
# ctest: edgebench-native's documented exit codes and one-line errors, on fixture files made here.
# Usage: exit_codes.sh BINARY
set -u
BIN=$1
TMP=$(mktemp -d "${TMPDIR:-/tmp}/edgebench-native-exit.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
failures=0

# A file that sniffs as TFLite (root offset 16, "TFL3") but is no valid flatbuffer, and one that sniffs as ONNX.
printf '\020\000\000\000TFL3' > "$TMP/bad.tflite"
head -c 120 /dev/zero >> "$TMP/bad.tflite"
printf '\010\007\022\004junkjunkjunk' > "$TMP/bad.onnx"
printf 'hello world' > "$TMP/text.tflite"

# expect CODE NEEDLE ARGS...: the exit code must be CODE, and stderr's one error line must contain NEEDLE.
expect() {
  code=$1; needle=$2; shift 2
  "$BIN" "$@" --events-fd 1 > "$TMP/out" 2> "$TMP/err"
  got=$?
  if [ "$got" -ne "$code" ]; then
    echo "FAILED: exit $got, expected $code: $BIN $*"; cat "$TMP/err"; failures=$((failures + 1)); return
  fi
  if [ "$code" -ne 0 ] && ! grep -q -- "$needle" "$TMP/err"; then
    echo "FAILED: stderr lacks '$needle': $BIN $*"; cat "$TMP/err"; failures=$((failures + 1)); return
  fi
  if [ "$code" -gt 2 ] && ! grep -q "\"type\": \"error\".*\"exit_code\": $code" "$TMP/out"; then
    echo "FAILED: no error event with exit_code $code: $BIN $*"; cat "$TMP/out"; failures=$((failures + 1)); return
  fi
  echo "ok     exit $code: $*"
}

expect 0 "" --version
expect 0 "" --help
expect 2 "unknown option --frobnicate" "$TMP/bad.tflite" --frobnicate
expect 2 "no MODEL" --min-runs 3
expect 2 "is shorter than --min-duration" "$TMP/bad.tflite" --min-duration 5 --max-duration 1
expect 3 "model file not found" "$TMP/missing.tflite"
expect 3 "is not a TFLite or ONNX model" "$TMP/text.tflite"
expect 5 "cannot load the TensorFlow Lite C library" "$TMP/bad.tflite" --tflite-lib "$TMP/libtensorflowlite_c.so"
expect 5 "cannot load the ONNX Runtime library" "$TMP/bad.onnx" --ort-lib "$TMP/libonnxruntime.so"
expect 6 "unknown TFLite delegate 'warp'" "$TMP/bad.tflite" --delegate xnnpack,warp
expect 6 "unknown ONNX Runtime execution provider 'quantum'" "$TMP/bad.onnx" --providers quantum,cpu

# These need the real runtime libraries the build points at.
if "$BIN" --version | grep -q "onnx"; then
  expect 3 "ONNX Runtime cannot load the model" "$TMP/bad.onnx"
fi
expect 3 "TFLite cannot load the model" "$TMP/bad.tflite"

echo "$failures failures"
[ "$failures" -eq 0 ]
