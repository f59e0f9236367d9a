#!/bin/sh
# ctest: the harness and the bare loop on the real models of the model cache ($EDGEBENCH_CACHE/models, filled by
# scripts/fetch_models.py / `make models`). Exits 77 (ctest: skipped) when the models are not there.
# Usage: real_models.sh BINARY BARE_BINARY
set -u
BIN=$1
BARE=$2
MODELS="${EDGEBENCH_CACHE:-$HOME/.cache/edgebench}/models"
for model in sine_float.tflite efficientnet_lite0_int8.tflite ppocr_cls.onnx silero_vad.onnx; do
  if [ ! -f "$MODELS/$model" ]; then
    echo "skipped: $MODELS/$model is missing (run scripts/fetch_models.py)"
    exit 77
  fi
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/edgebench-native-real.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
failures=0
FAST="--min-runs 20 --min-duration 0.05 --warmup-runs 2 --warmup-duration 0.02"

# run NAME CODE NEEDLE ARGS...: exit code CODE; for 0 the last event is a result, else stderr contains NEEDLE.
run() {
  name=$1; code=$2; needle=$3; shift 3
  # shellcheck disable=SC2086
  "$BIN" "$@" $FAST > "$TMP/out" 2> "$TMP/err"
  got=$?
  if [ "$got" -ne "$code" ]; then
    echo "FAILED $name: exit $got, expected $code"; tail -3 "$TMP/err"; failures=$((failures + 1)); return
  fi
  if [ "$code" -eq 0 ]; then
    if ! tail -n 1 "$TMP/out" | grep -q '^{"type": "result", "result": {"inputs": \[.*"samples": {"latency_ns": \['; then
      echo "FAILED $name: no result event"; tail -c 300 "$TMP/out"; failures=$((failures + 1)); return
    fi
  elif ! grep -q -- "$needle" "$TMP/err"; then
    echo "FAILED $name: stderr lacks '$needle'"; cat "$TMP/err"; failures=$((failures + 1)); return
  fi
  echo "ok     $name"
}

run tflite_xnnpack 0 "" "$MODELS/efficientnet_lite0_int8.tflite"
run tflite_cpu_after_missing_gpu 0 "" "$MODELS/sine_float.tflite" --delegate gpu,cpu
grep -q '"used": \["cpu"\], "fallbacks": \[{"candidate": "gpu"' "$TMP/out" || { echo "FAILED fallback not reported"; failures=$((failures + 1)); }
run tflite_resize 0 "" "$MODELS/sine_float.tflite" --shape "serving_default_dense_input:0=8x1"
run onnx_cpu 0 "" "$MODELS/ppocr_cls.onnx" --shape x=1x3x48x192 --threads 1
run onnx_scalar_and_state 0 "" "$MODELS/silero_vad.onnx" --shape input=1x512 --shape state=2x1x128 --input sr=16000
run onnx_missing_cuda 0 "" "$MODELS/ppocr_cls.onnx" --shape x=1x3x48x192 --providers cuda,cpu
grep -q '"used": \["CPUExecutionProvider"\], "fallbacks": \[{"candidate": "CUDAExecutionProvider"' "$TMP/out" || { echo "FAILED provider fallback not reported"; failures=$((failures + 1)); }
run tflite_placement_and_ops 0 "" "$MODELS/efficientnet_lite0_int8.tflite" --profile-runs 3
grep -q '"placement": {"source": "litert-graph", "first_choice": "xnnpack", "nodes": \[{' "$TMP/out" &&
  grep -q '"ops": {"source": "tflite-telemetry-profiler", "unavailable": null, "latency_ns": \[[0-9]*,[0-9]*,[0-9]*\]' "$TMP/out" &&
  grep -q '"op": "TfLiteXNNPackDelegate", "backend": "xnnpack", "duration_ns": \[[0-9]' "$TMP/out" ||
  { echo "FAILED tflite placement / ops not reported"; failures=$((failures + 1)); }
run onnx_profile_files 0 "" "$MODELS/ppocr_cls.onnx" --shape x=1x3x48x192 --profile-runs 2 --profile-dir "$TMP"
grep -q '"profile_files": {"placement": "'"$TMP"'/edgebench-ort-[^"]*-placement_[^"]*.json", "ops": "' "$TMP/out" ||
  { echo "FAILED onnx profile files not reported"; failures=$((failures + 1)); }
run no_delegate_runs 7 "no delegate in the chain" "$MODELS/sine_float.tflite" --delegate "$TMP/libnothere.so"
run dynamic_dim_needs_shape 4 "give it with --shape x=1x3xNxN" "$MODELS/ppocr_cls.onnx"
run missing_npy 4 "file not found" "$MODELS/sine_float.tflite" --input "$TMP/none.npy"
run wrong_chunk_fails_in_first_inference 8 "the first inference failed" "$MODELS/silero_vad.onnx" \
    --shape input=1x100 --shape state=2x1x128 --input sr=16000
if "$BARE" "$MODELS/sine_float.tflite" --runs 50 --min-duration 0.01 | grep -q '"latency_ns": \[[0-9]'; then
  echo "ok     bare_loop_tflite"
else
  echo "FAILED bare_loop_tflite"; failures=$((failures + 1))
fi
if "$BARE" "$MODELS/ppocr_cls.onnx" --shape x=1x3x48x192 --runs 20 --min-duration 0.01 | grep -q '"latency_ns": \[[0-9]'; then
  echo "ok     bare_loop_onnx"
else
  echo "FAILED bare_loop_onnx"; failures=$((failures + 1))
fi
echo "$failures failures"
[ "$failures" -eq 0 ]
