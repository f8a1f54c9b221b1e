#!/usr/bin/env bash
# The README and docs/ hold together: every relative link reaches a file
# (and a heading, when it names one), and every code block marked
# "<!-- full program -->" compiles against the library's headers and links.
set -euo pipefail
root=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
complain() { echo "docs: $*" >&2; fail=1; }

# GitHub's anchor for a heading: lower case, punctuation dropped, spaces to -.
anchors() { grep '^#' "$1" | sed 's/^#* //' | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9 _-]//g; s/ /-/g'; }

for doc in "$root"/README.md "$root"/docs/*.md; do
    dir=$(dirname "$doc")
    for link in $(grep -o '\](\([^)]*\))' "$doc" | sed 's/^](//; s/)$//' | grep -v '^[a-z]*:' || true); do
        path=${link%%#*}
        anchor=${link#"$path"}
        anchor=${anchor#\#}
        target=$dir/$path
        [ -n "$path" ] || target=$doc
        if [ ! -e "$target" ]; then
            complain "$(basename "$doc"): $link: no such file"
        elif [ -n "$anchor" ] && ! anchors "$target" | grep -qx -- "$anchor"; then
            complain "$(basename "$doc"): $link: no such heading"
        fi
    done
    awk -v out="$work/$(basename "$doc" .md)" '
        /^<!-- full program -->$/ { marked = 1; next }
        marked && /^```c$/ { n++; file = out "-" n ".c"; inside = 1; marked = 0; next }
        inside && /^```$/ { inside = 0; close(file); next }
        inside { print > file; next }
        { marked = 0 }' "$doc"
done

programs=$(ls "$work"/*.c 2>/dev/null || true)
[ -n "$programs" ] || complain "no code block is marked as a full program"
for program in $programs; do
    cc -std=gnu11 -Wall -Werror -Wno-unused-parameter -I"$root/include" -I"$build/include" -o "${program%.c}" "$program" \
        -L"$build/lib" -lringpool $(pkg-config --cflags --libs hiredis liburing) 2>"$work/cc.log" ||
        complain "$(basename "$program") does not build: $(cat "$work/cc.log")"
done
exit $fail
