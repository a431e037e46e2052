#!/usr/bin/env bash
# simulate-configmap-update.sh: publish a directory the way the kubelet publishes a mounted
# ConfigMap, so concierge's live reload can be tested against the Kubernetes layout without
# a cluster.
#
#   simulate-configmap-update.sh SOURCE_DIR TARGET_DIR
#
# Copies the regular files of SOURCE_DIR (top level only, like a ConfigMap's keys) into
# TARGET_DIR using the kubelet's AtomicWriter scheme:
#
#   TARGET_DIR/..2026_01_31_12_00_00.123456789/   the payload (a new directory per update)
#   TARGET_DIR/..data -> ..2026_01_31_...         switched atomically by rename(2)
#   TARGET_DIR/<key>  -> ..data/<key>             one symlink per key; NOT touched by an
#                                                 update of the key's content
#
# An update therefore shows up in TARGET_DIR as: create ..<timestamp>, create ..data_tmp,
# rename ..data_tmp over ..data, (new keys: create symlink; removed keys: delete symlink),
# delete the old ..<timestamp> directory. No event names a *.rhai / *.hbs file when only
# contents change. A watcher that filters events by file extension, or watches the files
# themselves, misses the update; one that rescans the directory on any event (ignoring the
# hidden `..` entries when listing) sees it. Run this twice with different SOURCE_DIR
# contents while concierge watches TARGET_DIR ([rules] dir) to check.

set -euo pipefail

[[ $# -eq 2 ]] || { sed -n '2,/^$/p' "$0" | sed -n 's/^# \{0,1\}//p' >&2; exit 2; }
src=$1 dst=$2
[[ -d $src ]] || { echo "not a directory: $src" >&2; exit 1; }
mkdir -p "$dst"

old=$(readlink "$dst/..data" 2>/dev/null || true)
ts="..$(date -u +%Y_%m_%d_%H_%M_%S).$(date +%N)"
mkdir "$dst/$ts"

keys=()
for f in "$src"/*; do
    [[ -f $f ]] || continue
    k=$(basename "$f")
    cp "$f" "$dst/$ts/$k"
    keys+=("$k")
done
chmod -R a+rX "$dst/$ts"

# The atomic switch.
ln -sfn "$ts" "$dst/..data_tmp"
mv -T "$dst/..data_tmp" "$dst/..data"

# User-visible symlinks: add the new keys, drop the removed ones.
for k in "${keys[@]}"; do
    [[ -L $dst/$k ]] || ln -s "..data/$k" "$dst/$k"
done
for link in "$dst"/*; do
    [[ -L $link ]] || continue
    k=$(basename "$link")
    [[ -e $dst/$ts/$k ]] || rm -f "$link"
done

[[ -n $old && $old != "$ts" ]] && rm -rf "${dst:?}/$old"
echo "published ${#keys[@]} file(s) from $src as $dst/$ts"
