#!/usr/bin/env bash
# Storage overhead against Optuna's RDBStorage (docs/benchmarks-search.md "Storage overhead"):
# ask + tell of Branin (a trivially cheap objective) with the random sampler at each study size,
# Attune's PostgresStorage / SqliteStorage against Optuna's RDBStorage on the same PostgreSQL
# server and the same file system, and a markdown table of the ratios.
#
#   bash benches/peers/bench_storage.sh [--trials-list 1000,10000] [--optuna-trials-list LIST]
#                                       [--tpe-trials 1000] [--storages postgres,sqlite]
#                                       [--python PATH] [--out target/bench-storage]
#
# --optuna-trials-list defaults to --trials-list (a smaller one when Optuna's largest size would
# take too long); --tpe-trials 0 skips TPE. PostgreSQL is a throwaway cluster (initdb into a
# temporary directory, durability off as in the tests' crates/search/tests/pg_cluster, a fresh
# database per side), stopped and removed at exit. SQLite files are new files in that
# directory. Results: OUT/{ours,optuna}.jsonl and report.md (also printed).
# Everything runs under `nice`.
set -euo pipefail

sizes="1000,10000"
optuna_sizes=""
tpe_trials=1000
storages="postgres,sqlite"
python=""
out=target/bench-storage
while [ $# -gt 0 ]; do
    case "$1" in
        --trials-list) sizes="$2"; shift 2 ;;
        --optuna-trials-list) optuna_sizes="$2"; shift 2 ;;
        --tpe-trials) tpe_trials="$2"; shift 2 ;;
        --storages) storages="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "bench_storage.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
optuna_sizes="${optuna_sizes:-$sizes}"

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
python="${python:-$root/.venv-search/bin/python}"
if ! "$python" -c 'import optuna, psycopg2' 2>/dev/null; then
    echo "bench_storage.sh: $python cannot import optuna and psycopg2; make the environment:" >&2
    echo "  python3 -m venv .venv-search && .venv-search/bin/pip install --require-hashes -r benches/peers/requirements-search.txt" >&2
    exit 2
fi

# PostgreSQL's server programs: PATH first, then the newest Debian version.
bin="$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")"
if [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "bench_storage.sh: initdb and pg_ctl not found; install PostgreSQL (apt-get install postgresql)" >&2
    exit 2
fi

echo "== build hpo_bench" >&2
cargo build --release -p attune-search --example hpo_bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/hpo_bench"

dir="$(mktemp -d -t attune-bench-storage-XXXXXX)"
as_server=()
if [ "$(id -u)" = 0 ]; then
    # initdb and postgres refuse root: run them as the user postgres, as the tests do.
    chown postgres: "$dir"
    as_server=(runuser -u postgres --)
fi
stop() {
    "${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT

port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
(cd "$dir" && LC_ALL=C "${as_server[@]}" "$bin/initdb" -U postgres -A trust --no-locale -E UTF8 --no-sync -D "$dir/data" >/dev/null)
(cd "$dir" && LC_ALL=C "${as_server[@]}" "$bin/pg_ctl" -w -t 30 -l "$dir/server.log" -D "$dir/data" \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null)
create_db() {
    "$python" -c 'import sys, psycopg2
c = psycopg2.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres")
c.autocommit = True
c.cursor().execute("CREATE DATABASE " + sys.argv[2])' "$port" "$1"
}

mkdir -p "$out"
: > "$out/ours.jsonl"
: > "$out/optuna.jsonl"
for storage in ${storages//,/ }; do
    case "$storage" in
        postgres)
            create_db attune_ours
            create_db optuna_theirs
            ours_url="postgres://postgres@127.0.0.1:$port/attune_ours"
            optuna_url="postgresql+psycopg2://postgres@127.0.0.1:$port/optuna_theirs" ;;
        sqlite)
            ours_url="sqlite:$dir/ours.db"
            optuna_url="sqlite:///$dir/optuna.db" ;;
        *) echo "bench_storage.sh: unknown storage '$storage' (postgres, sqlite)" >&2; exit 2 ;;
    esac
    echo "== $storage: attune random at $sizes trials" >&2
    nice "$bench" --overhead --samplers random --trials-list "$sizes" --storage "$ours_url" | tee -a "$out/ours.jsonl"
    echo "== $storage: optuna random at $optuna_sizes trials" >&2
    nice "$python" benches/peers/optuna_hpo.py --overhead --samplers random --trials-list "$optuna_sizes" \
        --storage "$optuna_url" | tee -a "$out/optuna.jsonl"
    if [ "$tpe_trials" != 0 ]; then
        echo "== $storage: TPE at $tpe_trials trials, both sides" >&2
        nice "$bench" --overhead --samplers tpe --trials-list "$tpe_trials" --storage "$ours_url" | tee -a "$out/ours.jsonl"
        nice "$python" benches/peers/optuna_hpo.py --overhead --samplers tpe --trials-list "$tpe_trials" \
            --storage "$optuna_url" | tee -a "$out/optuna.jsonl"
    fi
done

"$python" - "$out/ours.jsonl" "$out/optuna.jsonl" > "$out/report.md" <<'EOF'
import json, sys

lines = [json.loads(l) for path in sys.argv[1:] for l in open(path) if l.strip()]
key = lambda r: (r["storage"], r["sampler"], r["trials"])
by = {(r["impl"],) + key(r): r for r in lines}
fmt = lambda x: "-" if x is None else f"{x:.2e}"
ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.3f}"
print("| storage | sampler | trials | attune s/trial | optuna s/trial | attune / optuna "
      "| attune last 1000 | optuna last 1000 | attune / optuna (last 1000) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for k in sorted({key(r) for r in lines}):
    ours, theirs = by.get(("attune",) + k, {}), by.get(("optuna",) + k, {})
    a, b = ours.get("secs_per_trial"), theirs.get("secs_per_trial")
    al, bl = ours.get("secs_per_trial_last"), theirs.get("secs_per_trial_last")
    print(f"| {k[0]} | {k[1]} | {k[2]} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} | {fmt(al)} | {fmt(bl)} | {ratio(al, bl)} |")
EOF
cat "$out/report.md"
echo "== written: $out/ours.jsonl $out/optuna.jsonl $out/report.md" >&2
