#!/usr/bin/env bash
# Every public function has a man page, every link reaches a page, and
# every page has the sections a C programmer looks for and renders without
# a warning.
set -euo pipefail
root=${1:-$(dirname "$0")/..}
man3=$root/man/man3
fail=0
complain() { echo "man pages: $*" >&2; fail=1; }

# The public functions: RP_EXTERN declarations, and the adapters' inline ones.
functions=$( (grep -ho 'RP_EXTERN [^;(]*(' "$root"/include/ringpool/*.h || true;
              grep -ho '^static inline int rp_lib[a-z]*_[a-z]*(' "$root"/include/ringpool/*.h || true) |
            sed 's/($//' | awk '{print $NF}' | tr -d '*' | sort -u)
[ -n "$functions" ] || complain "found no public function in $root/include"
for f in $functions; do
    [ -f "$man3/$f.3" ] || complain "$f has no page"
done

for page in "$man3"/*.3 "$root"/man/man7/*.7; do
    first=$(head -n 1 "$page")
    if [[ $first == .so\ * ]]; then
        target=$root/man/${first#.so }
        [ -f "$target" ] || { complain "$page links to a missing ${first#.so }"; continue; }
        grep -q "^$(basename "$page" .3)[ ,]" <(sed -n '/^\.SH NAME/{n;p}' "$target" | tr -s ', ' '\n\n' | sed 's/$/ /') ||
            complain "$(basename "$target") does not name $(basename "$page" .3)"
        continue
    fi
    sections="NAME SYNOPSIS DESCRIPTION"
    [[ $page == *.3 ]] && sections="$sections RETURN.VALUE"
    for s in $sections SEE.ALSO; do
        grep -q "^\.SH $s" "$page" || complain "$(basename "$page") has no ${s/./ } section"
    done
    warnings=$(groff -man -z -ww -t "$page" 2>&1)
    [ -z "$warnings" ] || complain "$(basename "$page"): $warnings"
    rendered=$(MANWIDTH=80 man -l "$page" 2>&1 >/dev/null)
    [ -z "$rendered" ] || complain "$(basename "$page"): man -l: $rendered"
done
exit $fail
