#!/usr/bin/env bash
# Here, before a device run: a folder of wheels as one tar in parts that a call can carry each
# (the device tool carries 64 MiB a call, the tree included), with the manifest that
# `scripts/device_sources.sh part` joins and checks them by.
#
#   scripts/device_parts.sh BUNDLE FOLDER [FIRST_MIB] [MIB]
#
# writes .parts/BUNDLE.parts (the tar's sha256, then the part names) and .parts/BUNDLE.tar.00, .01, ...
# The first part is FIRST_MIB (default 44: it travels with the doctor's wheels and the sources), the
# rest MIB (default 60). Carry .parts/BUNDLE.parts with the first part, then one part a call.
set -eu
bundle=$1 folder=$2 first=${3:-44} rest=${4:-60}
mkdir -p .parts
rm -f ".parts/$bundle".*
tar -C "$folder" -cf ".parts/$bundle.tar" .
head -c "${first}M" ".parts/$bundle.tar" >".parts/$bundle.tar.00"
tail -c +"$((first * 1024 * 1024 + 1))" ".parts/$bundle.tar" | split -d --numeric-suffixes=1 -b "${rest}M" - ".parts/$bundle.tar."
{ sha256sum ".parts/$bundle.tar" | cut -d' ' -f1; (cd .parts && ls "$bundle".tar.[0-9][0-9]); } >".parts/$bundle.parts"
rm ".parts/$bundle.tar"
ls -l .parts/"$bundle".*
