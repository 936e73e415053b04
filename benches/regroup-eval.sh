#!/usr/bin/env bash
# Perplexity of calibrated merges on the tuning passage and the held-out passages, each with
# its standard error (the per-token NLLs' spread), on the f32 CPU oracle:
#   benches/regroup-eval.sh "G..." [fit flags...]
# e.g. benches/regroup-eval.sh "1 2" --calibration-tokens 8192 --k-slots energy
# Prints one JSON line per (G, passage). The passages (benches/texts/README.md): tuning, The
# Moonstone ch. II; held out, the fixture's Austen, The Moonstone's prologue, Around the World
# in Eighty Days ch. XXXV. Fits are cached (gqa-lab's maps cache), so a rerun only scores.
set -euo pipefail
cd "$(dirname "$0")/.."
groups=$1
shift
bin=${GQA_LAB_BIN:-target/release/gqa-lab}
austen=$(mktemp)
trap 'rm -f "$austen"' EXIT
node -e 'const f=require("fs");const d=JSON.parse(f.readFileSync(process.argv[1]));f.writeFileSync(process.argv[2],d.ids.join(","))' \
  ../shared/fixtures/perplexity.json "$austen"
for g in $groups; do
  for passage in tuning:--text-file=benches/texts/moonstone-chapter-2.txt \
    austen:--ids-file="$austen" \
    moonstone:--text-file=benches/texts/moonstone-prologue.txt \
    verne:--text-file=benches/texts/eighty-days-chapter-35.txt; do
    name=${passage%%:*}
    input=${passage#*:}
    "$bin" perplexity "$input" --groups "$g" --backend cpu --json "$@" |
      node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const p=JSON.parse(s);
        console.log(JSON.stringify({g:p.groups,passage:process.argv[1],tokens:p.tokens,
          perplexity:+p.perplexity.toFixed(3),se:+(p.perplexity*p.nll_std_error).toFixed(3),args:process.argv.slice(2).join(" ")}))})' "$name" "$@"
  done
done
