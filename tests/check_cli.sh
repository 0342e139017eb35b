#!/usr/bin/env bash
# CLI contract: --version, env, and exit code 2 with usage for an unknown subcommand or flag.
set -u
bin=$1
fails=0
expect_rc() {  # expect_rc WANT DESCRIPTION CMD...
  local want=$1 what=$2; shift 2
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$want" ]; then echo "FAIL: $what: exit $rc, want $want"; echo "$out"; fails=$((fails+1)); fi
}
expect_rc 0 "--version" "$bin" --version
"$bin" --version | grep -q "^orthoshard [0-9]" || { echo "FAIL: --version output"; fails=$((fails+1)); }
expect_rc 0 "env" "$bin" env
"$bin" env | grep -q "hdf5 .*parallel" || { echo "FAIL: env does not report parallel HDF5"; fails=$((fails+1)); }
"$bin" env | grep -q "devices" || { echo "FAIL: env does not report devices"; fails=$((fails+1)); }
expect_rc 2 "unknown subcommand" "$bin" frobnicate
"$bin" frobnicate 2>&1 | grep -q "unknown subcommand 'frobnicate'" || { echo "FAIL: no message"; fails=$((fails+1)); }
"$bin" frobnicate 2>&1 | grep -q "Usage:" || { echo "FAIL: no usage"; fails=$((fails+1)); }
expect_rc 2 "unknown flag" "$bin" env --no-such-flag
expect_rc 2 "unknown bench" "$bin" bench nothing
expect_rc 2 "bad value" "$bin" bench comm --iters zero
expect_rc 2 "no subcommand" "$bin"
# train --help lists every configuration key; docs/config.md is what --config-reference writes.
"$bin" train --help | grep -q "optim.conda_scale .*Conda's update scale" || { echo "FAIL: train --help lacks the keys"; fails=$((fails+1)); }
src=$(cd "$(dirname "$0")/.." && pwd)
"$bin" train --config-reference > "${TMPDIR:-/tmp}/config_reference.$$.md"
diff -q "${TMPDIR:-/tmp}/config_reference.$$.md" "$src/docs/config.md" >/dev/null ||
  { echo "FAIL: docs/config.md is stale: orthoshard train --config-reference > docs/config.md"; fails=$((fails+1)); }
rm -f "${TMPDIR:-/tmp}/config_reference.$$.md"
[ "$fails" -eq 0 ] && echo "PASS" || exit 1
