#!/bin/sh
# Counts words (letters only, lower-cased) in the corpus; writes word,count sorted by word.
# Plain busybox: the workload knows nothing of airlock, only its input file and output folder.
set -eu
out=/data/out/counts/counts.csv
echo "word,count" > "$out"
awk '{
  line = tolower($0)
  gsub(/[^a-z]+/, " ", line)
  n = split(line, words, " ")
  for (i = 1; i <= n; i++) if (words[i] != "") count[words[i]]++
}
END { for (w in count) print w "," count[w] }' /data/in/corpus.txt | sort >> "$out"
echo "counted $(($(wc -l < "$out") - 1)) distinct words"
