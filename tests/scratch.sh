# Sourced by the shell tests that train in a scratch folder: makes one,
# removes it on exit, moves into it, and defines
#   fail MSG   print "FAIL MSG" and exit 1
#   nolog F..  a JSON Lines log without its timing ("ms"), for comparing runs
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL $*"; exit 1; }
nolog() { sed 's/,"ms":[0-9.e+-]*//' "$@"; }
cd "$tmp" || exit 1
