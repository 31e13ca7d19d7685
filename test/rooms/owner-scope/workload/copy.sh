#!/bin/sh
# Copies the records into every output folder the room declares: the investigator's `report` and,
# in the look-alike, the open output `leak`. Exits 0.
set -eu
for o in report leak; do
  if [ -d "/data/out/$o" ]; then cp /data/in/records.txt "/data/out/$o/records.txt"; fi
done
echo "copied"
