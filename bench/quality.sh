#!/usr/bin/env bash
# Training-quality benchmark (run by hand, never by the tests): Muon, NorMuon and Conda against AdamW on the
# validation loss of real English text, for a small GPT-2 and a LLaMA of the same size, 2 CPU ranks.
#
#   bench/quality.sh [--quick] [--text FILE] [--json PATH] [--out DIR]
#
# Corpus: Jane Austen's six novels from the Debian package r-cran-janeaustenr (about 4 MB, read from the
# package's R data directly, bench/quality/austen_text.py), or --text FILE; byte-level tokens with a 5% held-out
# validation split (orthoshard prepare-data). A full run takes about 60 minutes here (2 cores), --quick about 8.
# Results: OUT/results.md (a table per model), OUT/val_curves.png, OUT/jsonl/*.jsonl (every run), --json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=runs/quality text="" pass=()
while [ $# -gt 0 ]; do
  case $1 in
    --text) text=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) pass+=("$1"); shift ;;
  esac
done
need=()
[ -n "$text" ] || [ -d /usr/lib/R/site-library/janeaustenr ] || need+=(r-cran-janeaustenr)
/usr/bin/python3 -c "import matplotlib" 2>/dev/null || need+=(python3-matplotlib)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
bin=${ORTHOSHARD_BIN:-$root/build/bin/orthoshard}
[ -x "$bin" ] || "$root/launch/build.sh"
[ "$(id -u)" -ne 0 ] || source "$root/launch/mpi-env.sh"
mkdir -p "$out"
if [ -z "$text" ]; then
  text=$out/austen.txt
  [ -s "$text" ] || /usr/bin/python3 "$root/bench/quality/austen_text.py" --out "$text"
fi
"$bin" prepare-data "$text" --out "$out/data/text.bin" --val-fraction 0.05
exec /usr/bin/python3 "$root/bench/quality/run.py" --data "$out/data/text.bin" --val "$out/data/text_val.bin" \
  --out "$out" --bin "$bin" ${pass[@]+"${pass[@]}"}
