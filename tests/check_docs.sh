#!/usr/bin/env bash
# The documentation does not go stale: every command shown in a ```sh block of README.md and docs/*.md (a line that
# is not a comment; lines ending in `\` joined) is either
#   - run here, from a scratch copy of the repository (its own runs/, checkpoints/, data/; build/bin/orthoshard is
#     the binary under test, also on PATH as `orthoshard`), under a timeout, and must exit 0; or
#   - listed in the table below, which says which test or CI script runs it (`test FILE`: FILE must exist and
#     contain the command's subcommand), or how a reduced form of it is run here (`run CMD`, `stub FILE`).
# Commands run in document order (README.md, then docs/*.md by name), so a page can use what its earlier commands
# wrote; a command shown twice is checked once. Illustrations that must not run go in ```text or ```console blocks.
# Also: README.md has at most 150 lines; every relative link in README.md and docs/*.md points to an existing
# file (and, for a #anchor into a .md file, to one of its headings); docs/README.md links every page of docs/.
# Each failure is one line naming the doc, the command and why; exit 1 if any.
# usage: check_docs.sh ORTHOSHARD   (the repository is this script's parent; ctest docs_commands)
set -u
bin=$(realpath "${1:?usage: check_docs.sh ORTHOSHARD}")
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src" || exit 1
[ -x "$bin" ] || { echo "FAIL: $bin is not an executable"; exit 1; }
source launch/mpi-env.sh  # Open MPI as root (ctest sets the same variables)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
unset ORTHOSHARD_BUILD_DIR ORTHOSHARD_QUICKSTART_DIR ORTHOSHARD_CHECKPOINT_FAIL
per_command_timeout=${CHECK_DOCS_TIMEOUT_S:-120}
max_readme_lines=150
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
docs=(README.md docs/*.md)

# ---- the table: commands this script does not run as written. A record is the command exactly as the doc shows
# it (whitespace collapsed, trailing comment dropped), then indented lines:
#   test FILE   the test or CI script that runs it (FILE must contain the command's subcommand)
#   hand FILE   run by hand only, never by CI (said in the doc); FILE must contain the command's subcommand
#   run CMD     run CMD here instead (a reduced equivalent; $TINY_GPT2, $TINY_LLAMA and $HOSTFILE are set)
#   stub FILE   run the command as written, with the scratch copy's FILE replaced by a no-op
#   why TEXT    the reason (required)
table() {
  cat <<'EOF'
./launch/quickstart.sh
  stub launch/build.sh
  why the whole script (env, selfcheck, the smoke training with checkpoints, ckpt inspect) but its build step: the binary under test is built already
./tests/run.sh
  test .ci/run
  why CI's entry point runs it on a fresh clone
./tests/run.sh -R comm
  test .ci/run
  why CI runs the same script without a filter (every test)
./tests/run.sh -L np3
  test .ci/run
  why CI runs the same script without a filter (every test)
cmake -S . -B build -G Ninja
  test launch/build.sh
  why tests/run.sh (CI) configures through launch/build.sh with the same cmake call
cmake --build build -j2
  test launch/build.sh
  why tests/run.sh (CI) builds through launch/build.sh with the same cmake call
ORTHOSHARD_BUILD_DIR=build-emu-asan CMAKE_BUILD_TYPE=RelWithDebInfo ORTHOSHARD_CMAKE_ARGS="-DORTHOSHARD_CUDA=EMULATE -DCMAKE_CXX_FLAGS=-fsanitize=address -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address" ./launch/build.sh
  test tests/run.sh
  why tests/run.sh (CI) builds the emulated build the same way (launch/build.sh, -DORTHOSHARD_CUDA=EMULATE, build-emu/); the ASan flags are run by hand, as the doc says
source launch/mpi-env.sh && ASAN_OPTIONS=detect_leaks=0 ctest --test-dir build-emu-asan
  test tests/run.sh
  why tests/run.sh (CI) runs ctest in the emulated build after sourcing launch/mpi-env.sh; the ASan build by hand
bench/quality.sh --quick
  hand bench/quality.sh
  why the training-quality benchmark: 8 minutes here, installs r-cran-janeaustenr and python3-matplotlib; run by hand, never by the tests, as the issue asks and the doc says
bench/quality.sh --json quality.json
  hand bench/quality.sh
  why the full training-quality benchmark, about an hour on 2 cores; run by hand
bench/quality.sh --text my_corpus.txt --quick
  hand bench/quality.sh
  why the same benchmark on another text; run by hand
bench/compare.sh --quick
  hand bench/compare.sh
  why needs python3-torch (which it installs) and minutes; the doc says it is run by hand, never by the tests
bench/compare.sh --json compare.json
  hand bench/compare.sh
  why needs python3-torch (which it installs) and about 15 minutes; run by hand
build/bin/orthoshard bench model --arch llama --shapes 60m,130m
  test tests/CMakeLists.txt
  why minutes on 2 cores; ctest llama.bench_model_smoke runs bench model --arch llama on the tiny shape
srun --nodes=1 --ntasks-per-node=8 --gpus-per-node=8 build/bin/orthoshard train --config launch/configs/llama-60m.toml
  test tests/test_train_config.cpp
  why needs Slurm, 8 GPUs and C4 shards; test_train_config loads every launch/configs/*.toml and checks the llama-60m shape; test_train_cuda trains LLaMA on the GPU (emulator), llama.smoke_config_np2 on CPU ranks
mpirun -np 8 build/bin/orthoshard train --config launch/configs/llama-130m.toml --runtime.backend=cpu --runtime.param_dtype=f32 --runtime.reduce_dtype=f32
  run mpirun -np 8 build/bin/orthoshard train --config launch/configs/llama-130m.toml --runtime.backend=cpu --runtime.param_dtype=f32 --runtime.reduce_dtype=f32 $TINY_LLAMA
  why needs C4 shards and hours: at 8 CPU ranks on a tiny LLaMA and synthetic data, every other key as the config has it
mpirun -np 8 build/bin/orthoshard train --config launch/configs/gpt2-124m.toml
  run mpirun -np 8 build/bin/orthoshard train --config launch/configs/gpt2-124m.toml $TINY_GPT2
  why the config is for GPUs and FineWeb shards: run at 8 ranks on a tiny GPT-2, CPU, synthetic data, every other key as the config has it
mpirun -np 16 --hostfile launch/hostfile.example --map-by ppr:8:node --bind-to none -x PATH -x LD_LIBRARY_PATH -x OMP_NUM_THREADS -x OMP_WAIT_POLICY=passive build/bin/orthoshard train --config launch/configs/gpt2-124m.toml
  run mpirun -np 2 --hostfile "$HOSTFILE" --map-by ppr:2:node --bind-to none -x PATH -x LD_LIBRARY_PATH -x OMP_NUM_THREADS -x OMP_WAIT_POLICY=passive build/bin/orthoshard train --config launch/configs/gpt2-124m.toml $TINY_GPT2
  why the hostfile names two 8-slot nodes: the same options with one local node of 2 slots, on the tiny model
sbatch launch/slurm/train.sbatch launch/configs/gpt2-124m.toml
  test tests/check_sbatch.sh
  why needs Slurm; ctest slurm_requeue_np2 runs launch/slurm/train.sbatch with stub srun/scontrol, through a signal and the requeue
srun --mpi=pmix --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 build/bin/orthoshard selfcheck
  test tests/CMakeLists.txt
  why needs Slurm and 2 nodes; ctest selfcheck_np2..4 run orthoshard selfcheck under mpiexec (srun --mpi=pmix as train.sbatch uses it: tests/check_sbatch.sh, stubbed)
build/bin/orthoshard bench gpu
  test tests/gpu/on-device.sh
  why needs a GPU; tests/gpu/on-device.sh bench runs it on the GPU machine
build/bin/orthoshard train --config launch/configs/gpt2-124m.toml --data.path=builtin:synthetic --train.steps=30
  test tests/gpu/on-device.sh
  why needs a GPU; tests/gpu/on-device.sh bench trains GPT-2 124M from this config for 30 steps
mpirun -np 2 build/bin/orthoshard replay ../shared/testdata/optim/normuon.h5 --backend cuda --precision bf16 --comm mpi
  test tests/gpu/on-device.sh
  why needs a GPU; tests/gpu/on-device.sh tests replays every trace with --backend cuda, bf16 and f32, nccl and mpi, 1-4 ranks
EOF
}
# The reduced GPT-2 124M runs: CPU, f32, synthetic data, one small layer, 2 steps, no checkpoint.
export TINY_GPT2="--runtime.backend=cpu --runtime.comm=mpi --runtime.param_dtype=f32 --runtime.reduce_dtype=f32
  --data.path=builtin:synthetic --model.L=1 --model.C=64 --model.NH=4 --model.V=256 --model.Vp=256 --model.maxT=64
  --train.seq_len=64 --train.batch_size=2 --train.grad_accum=1 --train.steps=2 --train.warmup_steps=0
  --checkpoint.every=0 --checkpoint.resume=none"
# The reduced LLaMA 60M/130M runs: synthetic data, one small layer, 2 steps, no checkpoint.
export TINY_LLAMA="--data.path=builtin:synthetic --model.L=1 --model.C=64 --model.NH=4 --model.NKV=4 --model.FF=0
  --model.V=256 --model.Vp=256 --model.maxT=64 --train.seq_len=64 --train.batch_size=1 --train.grad_accum=1
  --train.steps=2 --train.warmup_steps=0 --checkpoint.every=0 --checkpoint.resume=none"

declare -A kind arg why seen checked
key=""
while IFS= read -r line; do
  if [[ $line != " "* ]]; then
    key=$line
    kind[$key]=""; why[$key]=""
  else
    read -r k v <<<"$line"
    case $k in
      test | hand | run | stub) kind[$key]=$k; arg[$key]=$v ;;
      why) why[$key]=$v ;;
      *) fail "check_docs.sh: table entry \`$key\`: unknown field '$k'" ;;
    esac
  fi
done < <(table)
for k in "${!kind[@]}"; do
  [ -n "${kind[$k]}" ] && [ -n "${why[$k]}" ] || fail "check_docs.sh: table entry \`$k\` needs a kind and a why"
done

# normalize CMD: whitespace collapsed, a trailing comment dropped.
normalize() { sed -E 's/[[:space:]]+#.*$//; s/[[:space:]]+/ /g; s/^ //; s/ $//' <<<"$1"; }
# subcommand CMD: what a mapped file must contain: orthoshard's subcommand (`train`, `ckpt export`, `bench model`),
# else the program after the last &&, past environment assignments and wrappers (`tests/run.sh`, `cmake`).
subcommand() {
  local -a w
  local i n
  read -ra w <<<"$1"
  n=${#w[@]}
  for ((i = 0; i < n; i++)); do
    if [ "${w[i]}" = orthoshard ] || [[ ${w[i]} == */orthoshard ]]; then
      case ${w[i + 1]:-} in
        ckpt | bench) echo "${w[i + 1]} ${w[i + 2]:-}" ;;
        *) echo "${w[i + 1]:-}" ;;
      esac
      return
    fi
  done
  local seg=${1##*&&}
  seg=$(sed -E "s/\"[^\"]*\"//g; s/'[^']*'//g" <<<"$seg")
  read -ra w <<<"$seg"
  for ((i = 0; i < ${#w[@]}; i++)); do
    case ${w[i]} in
      *=* | env | exec | bash | sh | sudo) continue ;;
      timeout) i=$((i + 1)); continue ;;
    esac
    echo "${w[i]#./}"
    return
  done
}

# ---- README length
n=$(wc -l <README.md)
[ "$n" -le "$max_readme_lines" ] || fail "README.md: $n lines, more than $max_readme_lines (move the rest to docs/)"

# ---- relative links (outside code blocks), and anchors into .md files
# headings FILE: the GitHub anchors of FILE's headings, one per line.
headings() {
  awk '/^[ \t]*```/ { f = !f; next } !f && /^#+ / { h = tolower($0); sub(/^#+ +/, "", h);
       gsub(/[^a-z0-9 _-]/, "", h); gsub(/ /, "-", h); print h }' "$1"
}
for doc in "${docs[@]}"; do
  dir=$(dirname "$doc")
  while IFS=: read -r ln target; do
    case $target in http://* | https://* | mailto:*) continue ;; esac
    path=${target%%#*} anchor=""
    [[ $target == *"#"* ]] && anchor=${target#*#}
    if [ -n "$path" ]; then file=$dir/$path; else file=$doc; fi
    if [ ! -e "$file" ]; then
      fail "$doc:$ln: link '$target': $file does not exist"
    elif [ -n "$anchor" ] && [[ $file == *.md ]] && ! headings "$file" | grep -qxF "$anchor"; then
      fail "$doc:$ln: link '$target': $file has no heading with anchor #$anchor"
    fi
  done < <(awk '/^[ \t]*```/ { f = !f; next } !f { s = $0
             while (match(s, /\]\([^)]+\)/)) { print FNR ":" substr(s, RSTART + 2, RLENGTH - 3); s = substr(s, RSTART + RLENGTH) } }' "$doc")
done
for page in docs/*.md; do
  name=$(basename "$page")
  [ "$name" = README.md ] && continue
  grep -qF "]($name" docs/README.md || fail "docs/README.md: no link to $name (the index lists every page)"
done

# ---- the commands: file <TAB> line <TAB> command, in document order
commands=$(awk '
  FNR == 1 { f = 0; cont = "" }
  /^[ \t]*```/ { if (!f) { f = 1; lang = $0; sub(/^[ \t]*```/, "", lang); sub(/[ \t].*$/, "", lang) } else f = 0; next }
  f && (lang == "sh" || lang == "bash" || lang == "shell") {
    line = $0
    if (cont == "") { if (line ~ /^[ \t]*(#|$)/) next; start = FNR }
    if (line ~ /\\$/) { sub(/\\$/, "", line); cont = cont line " "; next }
    printf "%s\t%s\t%s\n", FILENAME, start, cont line; cont = ""
  }' "${docs[@]}")

# ---- the scratch copy: the repository's files as links, its own outputs, the binary under test
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
work=$tmp/repo
mkdir -p "$work/build/bin" "$work/launch"
ln -s "$bin" "$work/build/bin/orthoshard"
for e in "$src"/* "$src"/.ci; do
  case $(basename "$e") in build* | runs | checkpoints | data | launch | model.bin | compare.json) continue ;; esac
  ln -s "$e" "$work/"
done
for e in "$src"/launch/*; do ln -s "$e" "$work/launch/"; done
[ -d "$src/../shared" ] && ln -s "$(cd "$src/../shared" && pwd)" "$tmp/shared"
cat README.md docs/*.md >"$work/corpus.txt"  # the text docs/training.md tokenizes
export HOSTFILE=$tmp/hostfile
echo "localhost slots=2" >"$HOSTFILE"

run_here() {  # run_here WHERE SHOWN COMMAND: runs COMMAND in the scratch copy; 0 on exit status 0
  local where=$1 shown=$2 cmd=$3 log=$tmp/log t0=$SECONDS rc
  (cd "$work" && PATH="$work/build/bin:$PATH" timeout -k 5 "$per_command_timeout" bash -c "$cmd") </dev/null >"$log" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ]; then
    local why="exit $rc"
    [ "$rc" -eq 124 ] && why="timed out after ${per_command_timeout}s"
    local last
    last=$(grep -iE 'error|fail|unknown' "$log" | tail -1)
    [ -n "$last" ] || last=$(grep -v '^[[:space:]]*$' "$log" | tail -1)
    fail "$where: \`$shown\`: $why: ${last:-(no output)}"
    return 1
  fi
  echo "ok: $where: ran in $((SECONDS - t0))s${4:+ ($4)}: $shown"
}

t_start=$SECONDS
while IFS=$'\t' read -r doc ln raw; do
  [ -n "$doc" ] || continue
  cmd=$(normalize "$raw")
  where=$doc:$ln
  seen[$cmd]=1
  if [ -n "${checked[$cmd]:-}" ]; then
    echo "ok: $where: checked above: $cmd"
    continue
  fi
  case ${kind[$cmd]:-} in
    test | hand)
      file=${arg[$cmd]} sub=$(subcommand "$cmd")
      if [ ! -f "$file" ]; then
        fail "$where: \`$cmd\`: mapped to $file, which does not exist"
      elif [ -z "$sub" ] || ! grep -qF -- "$sub" "$file"; then
        fail "$where: \`$cmd\`: mapped to $file, which does not contain '$sub'"
      else
        [ "${kind[$cmd]}" = hand ] && by="by hand only (not CI), $file" || by="run by $file"
        echo "ok: $where: $by: $cmd"
        checked[$cmd]=1
      fi
      ;;
    run)
      run_here "$where" "$cmd" "${arg[$cmd]}" "reduced: ${arg[$cmd]}" && checked[$cmd]=1 ;;
    stub)
      stubbed=$work/${arg[$cmd]}
      rm -f "$stubbed"
      printf '#!/bin/sh\n# check_docs.sh: a no-op in place of %s\nexit 0\n' "${arg[$cmd]}" >"$stubbed"
      chmod +x "$stubbed"
      run_here "$where" "$cmd" "$cmd" "with ${arg[$cmd]} a no-op" && checked[$cmd]=1
      rm -f "$stubbed"
      ln -s "$src/${arg[$cmd]}" "$stubbed"
      ;;
    *)
      run_here "$where" "$cmd" "$cmd" && checked[$cmd]=1 ;;
  esac
done <<<"$commands"
for k in "${!kind[@]}"; do
  [ -n "${seen[$k]:-}" ] || fail "check_docs.sh: table entry \`$k\` is not shown in any doc (remove it, or fix its text)"
done

echo "commands checked in $((SECONDS - t_start))s"
[ "$fails" -eq 0 ] && echo "PASS" || exit 1
